"""Invariance and shape tests of the neural-graph encoder."""

from __future__ import annotations

import pytest
import torch
from netgraphs import SPECS, permute_hidden, to_graph
from torch_geometric.data import Batch

from raywse.models.augment import permute_graph_nodes, rescale_hidden_graph
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder, pad_kernels

SMALL = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16, accuracy_head=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def embed(encoder: NeuralGraphEncoder, graphs) -> torch.Tensor:
    with torch.no_grad():
        return encoder(Batch.from_data_list([encoder.prepare(g) for g in graphs]))


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_hidden_permutation_invariance(trained, kind):
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(SMALL).eval()
    gen = torch.Generator().manual_seed(1)
    tensors, spec = trained[kind][0], SPECS[kind]
    graph = to_graph(tensors, spec, "a")
    twin = to_graph(permute_hidden(tensors, spec, gen), spec, "b")
    shuffled = permute_graph_nodes(graph, gen)
    assert not torch.equal(graph.edge_index, shuffled.edge_index)
    z = embed(encoder, [graph, twin, shuffled])
    r_twin, r_shuffled = rel(z[1], z[0]), rel(z[2], z[0])
    print(f"{kind}: permuted-weights residual {r_twin:.2e}, permuted-graph residual {r_shuffled:.2e}")
    assert r_twin <= 1e-5 and r_shuffled <= 1e-5


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_rescale_invariance_with_canonicalisation(trained, kind):
    torch.manual_seed(0)
    graph = to_graph(trained[kind][0], SPECS[kind], "a")
    twin = rescale_hidden_graph(graph, torch.Generator().manual_seed(2))
    residuals = {}
    for canon in (True, False):
        encoder = NeuralGraphEncoder(EncoderConfig(**{**SMALL.to_dict(), "canonicalize_scale": canon})).eval()
        z = embed(encoder, [graph, twin])
        residuals[canon] = rel(z[1], z[0])
    print(f"{kind}: rescaled-twin residual canonicalised {residuals[True]:.2e}, raw {residuals[False]:.2e}")
    assert residuals[True] <= 1e-5
    assert residuals[False] > residuals[True]


def test_mixed_batch_and_accuracy_head(graphs):
    encoder = NeuralGraphEncoder(SMALL).eval()
    batch = Batch.from_data_list([encoder.prepare(g) for g in graphs])
    with torch.no_grad():
        z, acc = encoder.embed_and_predict(batch)
    assert z.shape == (len(graphs), SMALL.embed_dim) and torch.isfinite(z).all()
    assert torch.allclose(z.norm(dim=1), torch.ones(len(graphs)), atol=1e-5)
    assert acc.shape == (len(graphs),) and ((acc >= 0) & (acc <= 1)).all()
    # batched embedding equals one-by-one embedding (no cross-graph leakage)
    single = torch.cat([embed(encoder, [g]) for g in graphs])
    assert rel(z, single) <= 1e-5


def test_pad_kernels_rejects_large_kernels(graphs):
    with pytest.raises(ValueError, match="supports at most"):
        pad_kernels(next(g for g in graphs if tuple(g.kernel_shape) == (3, 3)), edge_dim=1)
    mlp = next(g for g in graphs if tuple(g.kernel_shape) == (1, 1))
    padded = pad_kernels(mlp, 9)
    assert padded.edge_attr.shape[1] == 9 and torch.equal(padded.edge_attr[:, 4], mlp.edge_attr[:, 0])
