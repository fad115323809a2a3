"""Fixtures for model tests: small trained nets and their neural graphs (helpers in ``netgraphs``)."""

from __future__ import annotations

import pytest
import torch
from netgraphs import SPECS, train_net
from torch_geometric.data import Data

from raywse.graph.neural_graph import to_neural_graph

torch.set_num_threads(1)  # tiny graphs: threading only adds overhead, and the test machine is shared


@pytest.fixture(scope="session")
def trained() -> dict[str, list[dict[str, torch.Tensor]]]:
    """Two trained nets per kind."""
    return {kind: [train_net(kind, seed) for seed in range(2)] for kind in SPECS}


@pytest.fixture(scope="session")
def graphs(trained) -> list[Data]:
    """Graphs of all trained nets (mixed MLP and CNN)."""
    return [to_neural_graph(t, SPECS[k], f"{k}-{i}") for k, ts in trained.items() for i, t in enumerate(ts)]
