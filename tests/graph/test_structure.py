"""The layer structure of a neural graph: keys of a batch as of its graphs, and one code per structure."""

from __future__ import annotations

import torch
from torch_geometric.data import Batch

from raywse.data.graphify import load_graphs
from raywse.graph.kernels import kernel_shape_batches
from raywse.graph.structure import architecture_key, architecture_keys, structure_codes


def test_a_batch_has_its_graphs_keys_and_one_structure_one_code(tiny_graphs):
    graphs = load_graphs(tiny_graphs)
    seen = 0
    for rows in kernel_shape_batches(graphs, 64):
        batch = Batch.from_data_list([graphs[i] for i in rows])
        keys = architecture_keys(batch)
        assert keys == [architecture_key(graphs[i]) for i in rows]
        codes = structure_codes(batch, 256)
        same = torch.tensor([[k == m for m in keys] for k in keys])
        sims = codes @ codes.T
        assert torch.allclose(sims[same], torch.ones(int(same.sum())), atol=1e-6)
        assert sims[~same].abs().max() < 0.3  # random unit vectors in 256 dimensions
        seen += len(set(keys))
    assert seen >= 4  # several structures, in batches of different kernel shapes
    assert not torch.equal(structure_codes(batch, 256, seed=1), structure_codes(batch, 256))
