"""Bidirectional LSTMs and GRUs (``nn.LSTM`` / ``nn.GRU`` with ``bidirectional=True``, their ``*_reverse`` tensors):
inferred from the names, the spec computes the module, the graph has each direction's node sets (the reverse hidden
state of its own type) and an edge per weight, and unit permutations within each direction keep function and
embedding."""

from __future__ import annotations

import pytest
import torch
from graph_nets import blocks_vs_reference, embedding_changes
from torch import nn

from raywse.core.forward import forward
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import graph_size, to_neural_graph
from raywse.graph.schema import NodeKind, NodeType
from raywse.graph.symmetry import permute_hidden

FEATURES, HIDDEN, CLASSES, LAYERS = 3, 5, 4, 2
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
HIDDEN_TYPES = {"lstm": (NodeType.LSTM_HIDDEN, NodeType.LSTM_REVERSE_HIDDEN),
                "gru": (NodeType.GRU_HIDDEN, NodeType.GRU_REVERSE_HIDDEN)}  # fmt: skip


class BiRNN(nn.Module):
    """A two-layer bidirectional recurrent net averaged over time, then a linear head (the inferred spec's guess for
    a recurrent layer read by a linear one)."""

    def __init__(self, kind: str):
        super().__init__()
        self.encoder = CELLS[kind](FEATURES, HIDDEN, num_layers=LAYERS, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * HIDDEN, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x [B, C, L]
        return self.fc(self.encoder(x.transpose(1, 2))[0].mean(dim=1))


def net_and_spec(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    net = BiRNN(kind).eval()
    spec, tensors = infer_spec_and_tensors(net.state_dict(), {"activation": "none"})
    return net, spec, tensors


@pytest.mark.parametrize("kind", CELLS)
def test_the_spec_of_a_bidirectional_net_computes_the_module(kind):
    net, spec, tensors = net_and_spec(kind)
    recurrent = [ly for ly in spec.layers if ly.kind == kind]
    assert [ly.name for ly in recurrent] == ["encoder.l0", "encoder.l1"] and all(ly.bidirectional for ly in recurrent)
    x = torch.randn(6, FEATURES, spec.input_shape[1])
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, tensors, x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", CELLS)
def test_each_direction_has_its_node_sets_and_an_edge_per_weight(kind):
    _, spec, tensors = net_and_spec(kind)
    g = to_neural_graph(tensors, spec, "birnn")
    wide = 2 * HIDDEN  # both directions' hidden states
    per_unit = 5  # an LSTM: four gates and the state; a GRU: r, z, m, n and the state
    assert g.num_nodes == FEATURES + LAYERS * per_unit * wide + CLASSES
    fan_in = (FEATURES, wide)
    if kind == "lstm":  # per direction: 4H x (inputs + recurrent), and 4H gate -> state edges
        recurrent = sum(2 * 4 * HIDDEN * (f + HIDDEN + 1) for f in fan_in)
    else:  # per direction: 3H x (inputs + recurrent), and 4H edges of weight 1
        recurrent = sum(2 * (3 * HIDDEN * (f + HIDDEN) + 4 * HIDDEN) for f in fan_in)
    assert g.num_edges == recurrent + wide * CLASSES
    assert graph_size(spec, tensors) == (g.num_nodes, g.num_edges)
    forward_type, reverse_type = HIDDEN_TYPES[kind]
    assert int((g.node_type == forward_type).sum()) == int((g.node_type == reverse_type).sum()) == LAYERS * HIDDEN
    assert int((g.node_kind == NodeKind.OUTPUT).sum()) == CLASSES
    assert g.probe_source != "none" and g.probe_act[g.node_kind != NodeKind.INPUT].abs().sum() > 0
    assert blocks_vs_reference(g) < 1e-5


@pytest.mark.parametrize("kind", CELLS)
def test_unit_permutations_within_each_direction_keep_function_and_embedding(kind):
    _, spec, tensors = net_and_spec(kind)
    twin = permute_hidden(tensors, spec, torch.Generator().manual_seed(3))
    for suffix in ("", "_reverse"):
        name = f"encoder.l0.weight_hh{suffix}"
        assert not torch.equal(twin[name], tensors[name])  # units moved, each within its own direction
        assert torch.equal(twin[name].sort(0)[0].sort(1)[0], tensors[name].sort(0)[0].sort(1)[0])
    x = torch.randn(4, FEATURES, spec.input_shape[1])
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, twin, x), forward(spec, tensors, x), rtol=1e-4, atol=1e-5)
    swapped = dict(tensors)  # the two directions' cells exchanged: another function, another embedding
    for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        swapped[f"encoder.l0.{p}"], swapped[f"encoder.l0.{p}_reverse"] = (tensors[f"encoder.l0.{p}_reverse"],
                                                                          tensors[f"encoder.l0.{p}"])  # fmt: skip
    permuted, other = embedding_changes(spec, tensors, twin, swapped)
    assert permuted < 1e-4 and other > 1e-3


def test_a_bidirectional_last_layer_hands_both_directions_out():
    torch.manual_seed(0)
    spec, tensors = infer_spec_and_tensors(nn.GRU(FEATURES, HIDDEN, bidirectional=True).state_dict())
    g = to_neural_graph(tensors, spec, "bigru")
    outputs = g.node_kind == NodeKind.OUTPUT
    assert g.node_pos[outputs].tolist() == list(range(2 * HIDDEN))
    assert set(g.node_type[outputs].tolist()) == {NodeType.GRU_HIDDEN, NodeType.GRU_REVERSE_HIDDEN}
