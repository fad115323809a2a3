"""GRU cells on a real module (a 1-D conv, an ``nn.GRU`` over the steps, a linear head on the mean state): the names
are read as a GRU, the spec computes the module's function, the graph has the node sets and edges the parameters
say, and permuting the GRU's units (and rescaling the conv channels it reads) keeps function and embedding while a
changed recurrent weight is seen."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from graph_nets import embedding_changes
from torch import nn

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, Layer
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import graph_size, to_neural_graph
from raywse.graph.schema import NodeType
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden

HIDDEN = 5


class ConvGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.gru = nn.GRU(6, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = self.gru(F.relu(self.conv(x)).transpose(1, 2))[0]  # [B, L, H]
        return self.head(states.mean(dim=1))


SPEC = ArchSpec(
    (2, 7),
    (
        Layer("conv1d", "conv", "relu", padding=1),
        Layer("gru", "gru.l0"),
        Layer("global_avg_pool"),
        Layer("linear", "head"),
    ),
)


def net_and_tensors() -> tuple[ConvGRU, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = ConvGRU().eval()
    tensors = {k.replace("_l0", "").replace("gru.", "gru.l0."): v for k, v in net.state_dict().items()}
    return net, tensors


def test_names_read_as_a_gru_and_the_spec_computes_the_module():
    net, tensors = net_and_tensors()
    inferred, renamed = infer_spec_and_tensors(dict(net.state_dict()))
    assert [ly.kind for ly in inferred.layers] == ["conv1d", "gru", "global_avg_pool", "linear"]
    assert set(renamed) == set(tensors)
    x = torch.randn(4, 2, 7)
    with torch.no_grad():
        torch.testing.assert_close(forward(SPEC, tensors, x), net(x), rtol=1e-5, atol=1e-6)


def test_graph_has_five_node_sets_per_unit_and_an_edge_per_weight():
    _, tensors = net_and_tensors()
    g = to_neural_graph(tensors, SPEC, "gru")
    assert g.num_nodes == 2 + 6 + 5 * HIDDEN + 3
    assert g.num_edges == 6 * 2 + 3 * HIDDEN * (6 + HIDDEN) + 4 * HIDDEN + 3 * HIDDEN
    assert graph_size(SPEC, tensors) == (g.num_nodes, g.num_edges)
    types = [NodeType(int(t)) for t in g.node_type.unique_consecutive()]
    assert types == [NodeType.INPUT, NodeType.CONV, NodeType.GRU_RESET_GATE, NodeType.GRU_UPDATE_GATE,
                     NodeType.GRU_RECURRENT_CANDIDATE, NodeType.GRU_CANDIDATE, NodeType.GRU_HIDDEN,
                     NodeType.LINEAR]  # fmt: skip
    reset = g.node_type == NodeType.GRU_RESET_GATE
    bias = tensors["gru.l0.bias_ih"] + tensors["gru.l0.bias_hh"]
    torch.testing.assert_close(g.x[reset, 0], bias[:HIDDEN])
    torch.testing.assert_close(g.x[g.node_type == NodeType.GRU_RECURRENT_CANDIDATE, 0], tensors["gru.l0.bias_hh"][-5:])
    # the candidate reads the inputs, its recurrent term and the reset gate; the state reads the candidate and update
    src, dst = g.edge_index
    into_state = g.node_type[dst] == NodeType.GRU_HIDDEN
    assert sorted({NodeType(int(t)) for t in g.node_type[src[into_state]]}) == [
        NodeType.GRU_UPDATE_GATE, NodeType.GRU_CANDIDATE,
    ]  # fmt: skip
    into_candidate = g.node_type[dst] == NodeType.GRU_CANDIDATE
    assert {NodeType(int(t)) for t in g.node_type[src[into_candidate]]} == {
        NodeType.CONV, NodeType.GRU_RECURRENT_CANDIDATE, NodeType.GRU_RESET_GATE,
    }  # fmt: skip
    assert not bool(torch.isclose(g.probe_act[reset], torch.zeros(())).all())  # the gates were probed


def test_gru_unit_permutations_and_input_rescaling_keep_function_and_embedding():
    net, tensors = net_and_tensors()
    gen = torch.Generator().manual_seed(1)
    twin = permute_hidden(tensors, SPEC, gen)
    assert not torch.equal(twin["gru.l0.weight_hh"], tensors["gru.l0.weight_hh"])
    assert rescalable_layers(SPEC) == ["conv"]
    twin = rescale_hidden(twin, SPEC, gen)  # the conv's channels: the GRU's weight_ih columns take 1/s
    x = torch.randn(6, 2, 7, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(forward(SPEC, twin, x), net(x), rtol=1e-4, atol=1e-5)
    changed = dict(tensors, **{"gru.l0.weight_hh": tensors["gru.l0.weight_hh"] * 1.5})
    permuted, recurrent = embedding_changes(SPEC, tensors, twin, changed)
    assert permuted < 1e-4 and recurrent > 1e-3
