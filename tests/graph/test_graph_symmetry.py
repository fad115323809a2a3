"""Weight-space symmetries keep the function of real trained nets; graph-level node permutation."""

from __future__ import annotations

import pytest
import torch
from graph_nets import digits, forward_spec, trained

from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import permute_graph_nodes, permute_hidden, rescalable_layers, rescale_hidden

ARCHS = ["mlp", "cnn_gap", "cnn_flat", "cnn_bn"]


def _max_diff(spec, a, b) -> float:
    """Max abs output difference on all digits, evaluated in float64 so only the weights' own rounding shows."""
    x = digits()[0].double()
    with torch.no_grad():
        ya = forward_spec(spec, {k: v.double() for k, v in a.items()}, x)
        yb = forward_spec(spec, {k: v.double() for k, v in b.items()}, x)
    return float((ya - yb).abs().max())


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "tanh", "gelu"])
@pytest.mark.parametrize("arch", ARCHS)
def test_permute_hidden_preserves_function(arch, act):
    spec, tensors = trained(arch, act)
    before = {k: v.clone() for k, v in tensors.items()}
    permuted = permute_hidden(tensors, spec, torch.Generator().manual_seed(1))
    assert all(torch.equal(tensors[k], before[k]) for k in tensors)  # inputs untouched
    assert set(permuted) == set(tensors)
    changed = [k for k in tensors if not torch.equal(permuted[k], tensors[k])]
    hidden_and_next = {n for n in tensors if not n.startswith(spec.layers[-1].name + ".")}
    assert set(changed) >= hidden_and_next - {k for k in tensors if "running" in k} and changed
    assert _max_diff(spec, tensors, permuted) <= 1e-5


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
@pytest.mark.parametrize("arch", ARCHS)
def test_rescale_hidden_preserves_function(arch, act):
    spec, tensors = trained(arch, act)
    hidden = [ly.name for ly in spec.layers if ly.kind in ("linear", "conv2d")][:-1]
    assert rescalable_layers(spec) == hidden
    rescaled = rescale_hidden(tensors, spec, torch.Generator().manual_seed(2))
    assert sum(not torch.equal(rescaled[k], tensors[k]) for k in tensors) >= 2 * len(hidden)
    assert _max_diff(spec, tensors, rescaled) <= 1e-5


def test_rescale_skips_non_homogeneous_layers():
    spec, tensors = trained("mlp", "relu")
    mixed = ArchSpec(spec.input_shape, (spec.layers[0], Layer("linear", "l.1", "tanh"), spec.layers[2]))
    assert rescalable_layers(mixed) == ["l.0"]
    rescaled = rescale_hidden(tensors, mixed, torch.Generator().manual_seed(0))
    assert not torch.equal(rescaled["l.0.bias"], tensors["l.0.bias"])
    assert torch.equal(rescaled["l.1.bias"], tensors["l.1.bias"]) and torch.equal(
        rescaled["l.2.weight"], tensors["l.2.weight"]
    )
    assert rescalable_layers(trained("cnn_flat", "tanh")[0]) == []
    with pytest.raises(SpecError, match="low"):
        rescale_hidden(tensors, spec, torch.Generator(), low=0.0)


def test_rescale_scales_batchnorm_not_the_conv():
    spec, tensors = trained("cnn_bn", "relu")
    rescaled = rescale_hidden(tensors, spec, torch.Generator().manual_seed(3))
    assert torch.equal(rescaled["l.0.weight"], tensors["l.0.weight"])
    assert not torch.equal(rescaled["l.1.weight"], tensors["l.1.weight"])


def _edge_multiset(g) -> list[tuple]:
    """Edges described by their endpoint features (not node indices), sorted."""
    feats = torch.cat([g.x, g.node_layer[:, None], g.node_pos[:, None]], dim=1)
    rows = torch.cat([feats[g.edge_index[0]], feats[g.edge_index[1]], g.edge_attr], dim=1)
    return sorted(map(tuple, rows.tolist()))


@pytest.mark.parametrize("arch", ["mlp", "cnn_flat"])
def test_permuted_weights_give_an_isomorphic_graph(arch):
    spec, tensors = trained(arch, "relu")
    g = to_neural_graph(tensors, spec)
    gp = to_neural_graph(permute_hidden(tensors, spec, torch.Generator().manual_seed(4)), spec)
    assert not torch.equal(g.x, gp.x)
    assert _edge_multiset(g) == _edge_multiset(gp)


def test_permute_graph_nodes():
    spec, tensors = trained("cnn_gap", "relu")
    g = to_neural_graph(tensors, spec)
    p = permute_graph_nodes(g, torch.Generator().manual_seed(5))
    assert not torch.equal(p.x, g.x)
    for key in ("node_layer", "node_kind", "node_pos", "node_act", "node_type"):
        assert torch.equal(p[key], g[key])  # only anonymous hidden nodes move, within their layer
    fixed = g.node_kind != 1
    assert torch.equal(p.x[fixed], g.x[fixed])
    assert _edge_multiset(p) == _edge_multiset(g)
    assert p.kernel_shape == g.kernel_shape and p.model_id == g.model_id
