"""The message-passing layer's process hygiene (its function is tested against the block form in test_blocks.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from raywse.models.conv import NeuralGraphConv


def test_building_the_layer_leaves_no_generated_source_behind():
    """PyG writes the layer's generated ``propagate`` to a temporary file; building the layer removes it, and the
    per-edge (reference) form still runs."""
    layer = NeuralGraphConv(hidden=8, edge_hidden=4)
    module = sys.modules[f"{NeuralGraphConv.__module__}_{NeuralGraphConv.__name__}_propagate"]
    assert not Path(module.__file__).exists()
    out = layer(torch.randn(3, 8), torch.tensor([[0, 1], [1, 2]]), torch.randn(2, 4), torch.ones(3, 1))
    assert out.shape == (3, 8) and torch.isfinite(out).all()
