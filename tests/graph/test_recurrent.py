"""1-D convs, LSTM cells and magnitude layers, on a real module laid out like silero-vad (STFT conv, channel-pair
magnitude, 1-D convs, an LSTM cell, a 1×1 conv head): the spec computes the module's function, the graph has the
nodes and edges the parameters say, and hidden permutations (LSTM units, STFT pairs) and rescalings keep function
and embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from graph_nets import embedding_changes
from torch import nn

from raywse.core.forward import forward, lstm_states
from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.neural_graph import graph_size, to_neural_graph
from raywse.graph.schema import NodeKind, NodeType
from raywse.graph.symmetry import flippable_layers, permute_hidden, rescalable_layers, rescale_hidden
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

BINS, HIDDEN = 9, 6


class TinyVAD(nn.Module):
    """silero-vad's layout, small: STFT as a bias-free strided conv, |STFT|, two 1-D convs, an LSTM cell over the
    frames, a 1×1 conv head averaged over frames."""

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 2 * BINS, kernel_size=16, stride=8, bias=False)
        self.conv1 = nn.Conv1d(BINS, 12, 3, padding=1)
        self.conv2 = nn.Conv1d(12, 8, 3, stride=2, padding=1)
        self.lstm_cell = nn.LSTMCell(8, HIDDEN)
        self.final_conv = nn.Conv1d(HIDDEN, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :BINS] ** 2 + x[:, BINS:] ** 2)
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        state, states = None, []
        for t in range(x.shape[2]):
            state = self.lstm_cell(x[:, :, t], state)
            states.append(state[0])
        x = F.relu(torch.stack(states, dim=2))
        return torch.sigmoid(self.final_conv(x)).mean(dim=2)


SPEC = ArchSpec(
    (1, 64),
    (
        Layer("conv1d", "stft_conv", stride=8),
        Layer("magnitude"),
        Layer("conv1d", "conv1", "relu", padding=1),
        Layer("conv1d", "conv2", "relu", stride=2, padding=1),
        Layer("lstm", "lstm_cell", "relu"),
        Layer("conv1d", "final_conv", "sigmoid"),
        Layer("global_avg_pool"),
    ),
)


def vad() -> tuple[TinyVAD, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = TinyVAD().eval()
    tensors = dict(net.state_dict())
    tensors["stft_conv.bias"] = torch.zeros(2 * BINS)  # bias=False: a spec file's layers read zeros
    return net, tensors


def test_the_spec_computes_the_module_and_the_lstm_matches_torch():
    net, tensors = vad()
    x = torch.randn(5, 1, 64)
    with torch.no_grad():
        torch.testing.assert_close(forward(SPEC, tensors, x), net(x), rtol=1e-5, atol=1e-6)
        lstm = nn.LSTM(8, HIDDEN, batch_first=True)
        seq = torch.randn(3, 8, 7)
        params = [getattr(lstm, f"{p}_l0") for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h, gates = lstm_states(seq, *params)
        torch.testing.assert_close(h, lstm(seq.transpose(1, 2))[0].transpose(1, 2), rtol=1e-5, atol=1e-6)
        assert gates.shape == (3, 4 * HIDDEN, 7) and bool((gates[:, : 2 * HIDDEN] > 0).all())  # sigmoid gates


def test_graph_has_a_node_per_neuron_gate_and_state_and_an_edge_per_weight():
    _, tensors = vad()
    g = to_neural_graph(tensors, SPEC, "vad")
    assert g.num_nodes == 1 + 2 * BINS + BINS + 12 + 8 + 5 * HIDDEN + 1
    lstm_edges = 4 * HIDDEN * 8 + 4 * HIDDEN * HIDDEN + 4 * HIDDEN  # input, recurrent, gate -> state
    assert g.num_edges == 2 * BINS + 2 * BINS + 12 * BINS + 8 * 12 + lstm_edges + HIDDEN
    assert graph_size(SPEC, tensors) == (g.num_nodes, g.num_edges)
    types = [NodeType(int(t)) for t in g.node_type.unique_consecutive()]
    assert types == [NodeType.INPUT, NodeType.CONV, NodeType.MAGNITUDE, NodeType.CONV, NodeType.LSTM_INPUT_GATE,
                     NodeType.LSTM_FORGET_GATE, NodeType.LSTM_CELL_GATE, NodeType.LSTM_OUTPUT_GATE,
                     NodeType.LSTM_HIDDEN, NodeType.CONV]  # fmt: skip
    assert int(g.node_layer.max()) == 10 and int((g.node_kind == NodeKind.OUTPUT).sum()) == 1
    # the gates' biases are both LSTM biases; every recurrent edge leaves the hidden state for a gate
    gates = g.node_type == NodeType.LSTM_INPUT_GATE
    torch.testing.assert_close(g.x[gates, 0], (tensors["lstm_cell.bias_ih"] + tensors["lstm_cell.bias_hh"])[:HIDDEN])
    src, dst = g.edge_index
    recurrent = g.node_type[src] == NodeType.LSTM_HIDDEN
    assert int(recurrent.sum()) == 4 * HIDDEN * HIDDEN + HIDDEN  # and the head's inputs
    # 1-D kernels are 1×k: a 16-tap kernel is an edge of 3 area-resampled taps (sum kept), the middle row of 3×3
    assert tuple(g.kernel_shape) == (1, 3)
    stft = (g.node_type[dst] == NodeType.CONV) & (g.node_layer[dst] == 1)
    torch.testing.assert_close(g.edge_attr[stft].sum(1), tensors["stft_conv.weight"].sum(-1).reshape(-1))
    padded = NeuralGraphEncoder(EncoderConfig()).prepare(g).edge_attr.view(-1, 3, 3)
    assert bool((padded[:, [0, 2]] == 0).all()) and torch.equal(padded[:, 1], g.edge_attr)
    assert not bool(torch.isclose(g.probe_act[gates], torch.zeros(())).all())  # the gates were probed


def test_lstm_and_stft_pair_permutations_and_rescaling_keep_function_and_embedding():
    net, tensors = vad()
    gen = torch.Generator().manual_seed(1)
    twin = permute_hidden(tensors, SPEC, gen)
    assert not torch.equal(twin["lstm_cell.weight_hh"], tensors["lstm_cell.weight_hh"])
    assert not torch.equal(twin["stft_conv.weight"], tensors["stft_conv.weight"])
    assert rescalable_layers(SPEC) == ["conv1", "conv2"]  # not the STFT: its channels are paired
    assert flippable_layers(SPEC) == []
    twin = rescale_hidden(twin, SPEC, gen)  # conv2 feeds the LSTM: its weight_ih columns take 1/s
    x = torch.randn(6, 1, 64, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(forward(SPEC, twin, x), net(x), rtol=1e-4, atol=1e-5)
    changed = dict(tensors, **{"lstm_cell.weight_hh": tensors["lstm_cell.weight_hh"] * 1.5})
    permuted, recurrent = embedding_changes(SPEC, tensors, twin, changed)
    assert permuted < 1e-4 and recurrent > 1e-3  # the recurrent weights are seen


def test_malformed_recurrent_and_magnitude_layers_are_refused_in_one_line():
    _, tensors = vad()
    odd = ArchSpec((1, 64), (Layer("conv1d", "conv1", padding=1), Layer("magnitude")))
    with pytest.raises(SpecError, match="magnitude ''.*C = 9 is odd"):
        odd.validate({"conv1.weight": torch.ones(9, 1, 3), "conv1.bias": torch.zeros(9)})
    bad = dict(tensors, **{"lstm_cell.weight_hh": torch.ones(4 * HIDDEN, HIDDEN + 1)})
    with pytest.raises(SpecError, match="lstm 'lstm_cell'.*not an LSTM cell's"):
        SPEC.validate(bad)
    into_lstm = ArchSpec((8,), (Layer("linear", "a"), Layer("lstm", "l"), Layer("add", source="a")))
    weights = {"a.weight": torch.ones(6, 8), "a.bias": torch.zeros(6)}
    weights |= {f"l.{p}": torch.ones(24, 6) for p in ("weight_ih", "weight_hh")}
    weights |= {f"l.{p}": torch.zeros(24) for p in ("bias_ih", "bias_hh")}
    with pytest.raises(SpecError, match="residual add into lstm layer 'l' is not supported"):
        to_neural_graph(weights, into_lstm)


def _random(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=gen) * 0.5 for k, s in shapes.items()}


def _attention(name: str, width: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.{p}.{w}": (width, width)[: 2 if w == "weight" else 1] for p in ("query", "key", "value")
            for w in ("weight", "bias")}  # fmt: skip


LAYOUTS = {
    "layer norm first": (
        ArchSpec((6,), (Layer("layernorm", "n"), Layer("linear", "a", "relu"), Layer("linear", "b"))),
        {"n.weight": (6,), "n.bias": (6,), "a.weight": (5, 6), "a.bias": (5,), "b.weight": (3, 5), "b.bias": (3,)},
    ),
    "magnitude after attention": (
        ArchSpec(
            (8, 5),
            (Layer("attention", "att", heads=2), Layer("magnitude"), Layer("global_avg_pool"), Layer("linear", "out")),
        ),  # fmt: skip
        {**_attention("att", 8), "out.weight": (3, 4), "out.bias": (3,)},
    ),
    "two magnitudes": (
        ArchSpec(
            (2, 7),
            (
                Layer("conv1d", "c", padding=1),
                Layer("magnitude"),
                Layer("magnitude"),
                Layer("global_avg_pool"),
                Layer("linear", "out"),
            ),
        ),  # fmt: skip
        {"c.weight": (8, 2, 3), "c.bias": (8,), "out.weight": (3, 2), "out.bias": (3,)},
    ),
    "PReLU after an LSTM": (
        ArchSpec((4, 6), (Layer("lstm", "l"), Layer("prelu", "p"), Layer("global_avg_pool"), Layer("linear", "out"))),
        {
            "l.weight_ih": (20, 4),
            "l.weight_hh": (20, 5),
            "l.bias_ih": (20,),
            "l.bias_hh": (20,),
            "p.weight": (5,),
            "out.weight": (3, 5),
            "out.bias": (3,),
        },  # fmt: skip
    ),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_permutations_keep_the_function_of_unusual_layouts(layout):
    spec, shapes = LAYOUTS[layout]
    tensors = _random(shapes)
    x = torch.randn(4, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    for seed in range(3):
        twin = permute_hidden(tensors, spec, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(forward(spec, twin, x), forward(spec, tensors, x), rtol=1e-4, atol=1e-5)


def test_a_residual_from_the_layer_it_reads_anyway_is_refused():
    spec = ArchSpec((4,), (Layer("linear", "a"), Layer("linear", "b"), Layer("add", source="a")))
    tensors = {
        "a.weight": torch.ones(4, 4),
        "a.bias": torch.zeros(4),
        "b.weight": torch.ones(4, 4),
        "b.bias": torch.zeros(4),
    }
    with pytest.raises(SpecError, match="residual add into 'b' from 'a', the layer it reads anyway"):
        to_neural_graph(tensors, spec)
