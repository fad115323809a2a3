"""Random graph transforms: composable, reproducible, inputs untouched; the symmetries preserve the function."""

from __future__ import annotations

import torch
from graph_nets import trained

from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.schema import NodeKind
from raywse.graph.symmetry import canonicalize_scale, canonicalize_sign, odd_nodes, scalable_nodes
from raywse.graph.transforms import (
    Compose,
    DropEdges,
    FlipHidden,
    HideProbes,
    PermuteHidden,
    RescaleHidden,
    WeightNoise,
    contrastive_view,
)


def graph():
    spec, tensors = trained("mlp", "relu")
    return to_neural_graph(tensors, spec, "m")


def test_views_are_reproducible_and_leave_the_input_alone():
    g = graph()
    before = g.edge_attr.clone()
    view = contrastive_view(noise=0.05, edge_drop=0.1, permute=True)
    a = view(g, torch.Generator().manual_seed(3))
    b = view(g, torch.Generator().manual_seed(3))
    assert torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(g.edge_attr, before)
    kinds = [RescaleHidden, FlipHidden, PermuteHidden, WeightNoise, DropEdges, HideProbes]
    assert [type(t) for t in view.transforms] == kinds


def test_compose_applies_in_order_and_zero_strength_is_identity():
    g = graph()
    gen = torch.Generator().manual_seed(0)
    assert Compose([WeightNoise(0.0), DropEdges(0.0)])(g, gen) is g
    dropped = DropEdges(0.5)(g, gen)
    assert 0.3 * g.num_edges < dropped.num_edges < 0.7 * g.num_edges
    noisy = WeightNoise(0.1)(g, gen)
    inputs = g.node_kind == NodeKind.INPUT
    assert torch.equal(noisy.x[inputs], g.x[inputs]) and not torch.equal(noisy.edge_attr, g.edge_attr)


def canonical(g):
    """Sign- then scale-canonical weights, biases and probe responses (as the encoder computes them)."""
    odd = odd_nodes(g)
    edge_attr, bias, probes = canonicalize_sign(
        g.edge_index, g.edge_attr.double(), g.x.view(-1).double(), g.probe_act.double(), odd
    )
    scalable = scalable_nodes(g)
    edge_attr, bias, factor = canonicalize_scale(g.edge_index, edge_attr, bias, g.node_layer, scalable)
    return edge_attr, bias, probes / factor.unsqueeze(-1)


def test_rescale_hidden_is_removed_exactly_by_the_canonicalisation():
    """The graph form is a pure per-neuron rescaling: the scale canonicalisation maps both graphs to one."""
    g = graph()
    out = RescaleHidden()(g, torch.Generator().manual_seed(1))
    assert not torch.allclose(out.edge_attr, g.edge_attr)
    for a, b in zip(canonical(out), canonical(g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_sign_flips_of_tanh_neurons_are_removed_exactly_by_the_canonicalisation():
    spec, tensors = trained("mlp", "tanh")
    g = to_neural_graph(tensors, spec, "m")
    out = FlipHidden()(g, torch.Generator().manual_seed(1))
    assert not torch.allclose(out.edge_attr, g.edge_attr) and not torch.allclose(out.probe_act, g.probe_act)
    for a, b in zip(canonical(out), canonical(g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_hide_probes_zeroes_the_responses_and_says_so():
    g = graph()
    hidden = HideProbes(1.0)(g, torch.Generator().manual_seed(0))
    assert hidden.probe_source == "none" and not hidden.probe_act.any() and g.probe_act.any()
    assert HideProbes(0.0)(g, torch.Generator()) is g


def test_a_view_of_a_batch_acts_on_each_graph_alone():
    from torch_geometric.data import Batch

    from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

    graphs = [to_neural_graph(trained("mlp", act)[1], trained("mlp", act)[0], act) for act in ("relu", "tanh")] * 3
    batch = Batch.from_data_list(graphs)
    gen = torch.Generator().manual_seed(0)
    permuted = Compose([RescaleHidden(), FlipHidden(), PermuteHidden()])(batch, gen)
    # every node stays in its graph and layer; the exact symmetries leave each graph's embedding where it was
    assert torch.equal(permuted.batch, batch.batch) and torch.equal(permuted.node_layer, batch.node_layer)
    encoder = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=16)).eval()
    with torch.no_grad():
        before, after = encoder(batch), encoder(permuted)
    assert (before - after).abs().max() < 1e-5
    hidden = HideProbes(0.5)(batch, torch.Generator().manual_seed(1))
    gone = [s == "none" for s in hidden.probe_source]
    assert 0 < sum(gone) < len(graphs)  # per graph, not all or nothing
    for i, g in enumerate(graphs):
        rows = hidden.probe_act[hidden.batch == i]
        assert torch.equal(rows, torch.zeros_like(rows)) if gone[i] else torch.equal(rows, g.probe_act)
