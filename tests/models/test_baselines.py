"""Every embedder returns finite float32 (n, d); the non-equivariant GNN baseline is not permutation invariant."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from raywse.graph.symmetry import permute_graph_nodes
from raywse.models.baselines import (
    FlatMLPEmbedder,
    InputSaliencyEmbedder,
    MetadataTextEmbedder,
    NonEquivariantEncoder,
    NonEquivariantGNNEmbedder,
    WeightPCAEmbedder,
    WeightStatsEmbedder,
)
from raywse.models.embedder import BASELINE_CONTRASTIVE, Embedder, GNNEmbedder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

SMALL = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)
FOUR = replace(BASELINE_CONTRASTIVE, batch_size=4)


def make_embedders() -> list[Embedder]:
    return [
        WeightStatsEmbedder(),
        WeightPCAEmbedder(dim=8),
        FlatMLPEmbedder(dim=8, length=512, hidden=32, steps=5),
        InputSaliencyEmbedder(max_inputs=64),
        MetadataTextEmbedder(dim=4),
        GNNEmbedder(NeuralGraphEncoder(SMALL), train_steps=3, contrastive=FOUR),
        NonEquivariantGNNEmbedder(NonEquivariantEncoder(SMALL), train_steps=3, contrastive=FOUR),
    ]


@pytest.mark.parametrize("embedder", make_embedders(), ids=lambda e: e.name)
def test_embedder_shapes(graphs, embedder):
    assert isinstance(embedder, Embedder)
    labels = np.array([i // 2 for i in range(len(graphs))])
    for g, kind in zip(graphs, labels, strict=True):
        g.description = f"task digits family {['mlp', 'cnn', 'flat'][kind]} seed {int(kind)}"
    z = embedder.fit(graphs, labels).embed(graphs)
    assert z.dtype == np.float32 and z.ndim == 2 and z.shape[0] == len(graphs) and z.shape[1] > 0
    assert np.isfinite(z).all()


def test_gnn_embedder_from_state_roundtrip(graphs):
    encoder = NeuralGraphEncoder(SMALL)
    a = GNNEmbedder(encoder).embed(graphs)
    b = GNNEmbedder.from_state(encoder.state_dict(), SMALL).embed(graphs)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nonequivariant_baseline_fails_permutation(graphs):
    gen = torch.Generator().manual_seed(0)
    for cls in (NonEquivariantEncoder, NeuralGraphEncoder):
        torch.manual_seed(0)
        embedder = GNNEmbedder(cls(SMALL))
        z = embedder.embed(graphs)
        zp = embedder.embed([permute_graph_nodes(g, gen, shuffle_edges=True) for g in graphs])
        residual = float(np.linalg.norm(z - zp) / np.linalg.norm(z))
        print(f"{cls.__name__}: permuted-graph residual {residual:.2e}")
        if cls is NonEquivariantEncoder:
            assert residual > 1e-3
        else:
            assert residual <= 1e-5
