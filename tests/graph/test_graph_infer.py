"""Spec inference for foreign checkpoints: recovers sequential nets exactly, refuses everything else clearly."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from graph_nets import digits
from safetensors.torch import save_file
from torch import nn

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint
from raywse.graph.infer import ACTIVATION_HINT, infer_spec, infer_spec_and_tensors, with_hidden_activation
from raywse.graph.names import NOMINAL_SPATIAL, natural_key
from raywse.graph.neural_graph import graph_size, to_neural_graph


class Wrapped(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _same_function(net: nn.Module, act: str, x: torch.Tensor) -> None:
    spec, tensors = infer_spec_and_tensors(net.state_dict())
    with torch.no_grad():
        assert (forward(with_hidden_activation(spec, act), tensors, x) - net.eval()(x)).abs().max() < 1e-5


def test_natural_sort():
    names = ["layers.10", "layers.2", "layers.1", "head", "layers.100"]
    assert sorted(names, key=natural_key) == ["head", "layers.1", "layers.2", "layers.10", "layers.100"]


def test_infers_deep_mlp_in_numeric_order():
    torch.manual_seed(0)
    body = [nn.Linear(64, 12), nn.ReLU()] + [m for _ in range(6) for m in (nn.Linear(12, 12), nn.ReLU())]
    net = Wrapped(*body, nn.Linear(12, 10))  # layers.0 ... layers.14: numeric order matters past layers.9
    spec = infer_spec(net.state_dict())
    names = [f"layers.{i}" for i in range(0, 15, 2)]
    expected = tuple(Layer("linear", n, "unknown") for n in names[:-1]) + (Layer("linear", names[-1]),)
    assert spec == ArchSpec((64,), expected)
    _same_function(net, "relu", digits()[0].reshape(-1, 64))


def test_infers_cnn_with_batchnorm_and_gap():
    torch.manual_seed(0)
    net = Wrapped(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 5, padding=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 10),
    )
    net.layers[1].running_mean.normal_()
    net.layers[1].running_var.uniform_(0.5, 2)
    spec = infer_spec(net.state_dict())
    assert [ly.kind for ly in spec.layers] == ["conv2d", "batchnorm", "conv2d", "global_avg_pool", "linear"]
    assert spec.input_shape == (1, NOMINAL_SPATIAL, NOMINAL_SPATIAL)
    assert [ly.padding for ly in spec.layers if ly.kind == "conv2d"] == [1, 2]
    assert [ly.activation for ly in spec.layers] == ["none", "unknown", "unknown", "none", "none"]
    _same_function(net, "relu", digits()[0])


def test_infers_cnn_flatten_size():
    torch.manual_seed(0)
    net = Wrapped(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 5, 3, padding=1), nn.Tanh())
    net.layers.append(nn.Flatten())
    net.layers.append(nn.Linear(5 * 64, 10))
    spec = infer_spec(net.state_dict())
    assert spec.input_shape == (1, 8, 8) and spec.layers[-2].kind == "flatten"
    _same_function(net, "tanh", digits()[0])
    g = to_neural_graph(*reversed(infer_spec_and_tensors(net.state_dict())))
    assert (g.num_nodes, g.num_edges) == (1 + 3 + 5 + 10, 3 + 15 + 50)
    # each linear edge carries the 8×8 block of its channel, resampled by area to the 3×3 edge width: sums kept
    assert g.kernel_shape == (3, 3)
    blocks = net.layers[-1].weight.detach().reshape(10, 5, 64).sum(-1).reshape(-1)
    torch.testing.assert_close(g.edge_attr[-50:].sum(-1), blocks, rtol=1e-5, atol=1e-6)


def test_missing_bias_and_counters():
    net = Wrapped(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3, affine=False), nn.ReLU(), nn.Linear(3, 2))
    sd = net.state_dict()
    spec, tensors = infer_spec_and_tensors(sd)
    assert torch.equal(tensors["layers.0.bias"], torch.zeros(3))
    assert torch.equal(tensors["layers.1.weight"], torch.ones(3))
    assert "layers.1.num_batches_tracked" not in tensors and "layers.1.num_batches_tracked" in sd
    assert set(tensors) == set(spec.tensor_names())
    assert graph_size(spec, tensors) == (9, 18)


class NamedHeads(nn.Module):
    """MTCNN's naming: ``conv{i}`` / ``prelu{i}`` attributes (name order puts every prelu after every conv) and two
    output heads ``fc3_1`` / ``fc3_2`` reading the same features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(4)
        self.conv2, self.prelu2 = nn.Conv2d(4, 4, 3, padding=1), nn.PReLU(4)
        self.fc3_1, self.fc3_2 = nn.Linear(4 * 8 * 8, 2), nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu2(self.conv2(self.prelu1(self.conv1(x)))).flatten(1)
        return torch.cat([self.fc3_1(x), self.fc3_2(x)], dim=1)


def test_prelus_follow_the_layer_of_their_number_and_output_heads_are_one_layer():
    torch.manual_seed(0)
    net = NamedHeads()
    with torch.no_grad():  # slopes of both signs, per channel
        net.prelu1.weight.copy_(torch.tensor([0.3, -0.2, 0.0, 1.5]))
    spec, tensors = infer_spec_and_tensors(net.state_dict())
    kinds = [(ly.kind, ly.name) for ly in spec.layers]
    assert kinds == [("conv2d", "conv1"), ("prelu", "prelu1"), ("conv2d", "conv2"), ("prelu", "prelu2"),
                     ("flatten", ""), ("linear", "fc3_1+fc3_2")]  # fmt: skip
    assert all(ly.activation == "none" for ly in spec.layers)  # the PReLUs are the activations: nothing unknown
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        assert (forward(spec, tensors, x) - net(x)).abs().max() < 1e-5
    g = to_neural_graph(tensors, spec, "heads")
    assert (g.node_kind == 2).sum() == 5 and g.act_slope[1:5].tolist() == pytest.approx([0.3, -0.2, 0.0, 1.5])


def test_a_batch_norm_after_a_prelu_stays_after_it():
    """conv → PReLU → BN in a Sequential: the PReLU is not moved past the norm named after it; graphify then refuses
    the norm it cannot fold (it does not follow the conv directly) in one line."""
    torch.manual_seed(0)
    net = Wrapped(nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(4), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1))
    net.layers[2].running_mean.normal_()
    spec, tensors = infer_spec_and_tensors(net.eval().state_dict())
    assert [ly.kind for ly in spec.layers] == ["conv2d", "prelu", "batchnorm", "conv2d"]
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert (forward(with_hidden_activation(spec, "none"), tensors, x) - net(x)).abs().max() < 1e-5
    with pytest.raises(SpecError, match="does not directly follow a linear/conv layer"):
        to_neural_graph(tensors, spec)


def test_prelu_in_a_sequential_and_chained_siblings_are_not_heads():
    torch.manual_seed(0)
    net = Wrapped(nn.Linear(6, 6), nn.PReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    spec, tensors = infer_spec_and_tensors(net.state_dict())
    assert [ly.kind for ly in spec.layers] == ["linear", "prelu", "linear", "linear"]
    assert [ly.activation for ly in spec.layers] == ["none", "none", "unknown", "none"]
    x = torch.rand(4, 6)
    with torch.no_grad():
        assert (forward(with_hidden_activation(spec, "relu"), tensors, x) - net(x)).abs().max() < 1e-5
    chained = {f"fc{i}_{j}.{p}": t for (i, j, shape) in ((1, 1, (6, 6)), (1, 2, (6, 6)), (1, 3, (3, 6)))
               for p, t in (("weight", torch.randn(shape)), ("bias", torch.zeros(shape[0])))}  # fmt: skip
    assert [ly.name for ly in infer_spec(chained).layers] == ["fc1_1", "fc1_2", "fc1_3"]  # they chain: a sequence


def _attention_like() -> dict[str, torch.Tensor]:
    d = 8
    sd = {f"blocks.0.{p}.weight": torch.randn(d, d) for p in ("q", "k", "v", "o")}
    sd |= {"blocks.0.ff1.weight": torch.randn(4 * d, d), "blocks.0.ff2.weight": torch.randn(d, 4 * d)}
    return sd


class SequenceNet(nn.Module):
    """A 1-D conv, a two-layer ``nn.LSTM`` over its frames, a linear layer on the mean state (named in chain order:
    inference orders modules by name)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 5, 3, padding=1)
        self.lstm = nn.LSTM(5, 4, num_layers=2, batch_first=True)
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states, _ = self.lstm(torch.relu(self.conv(x)).transpose(1, 2))
        return self.out(states.mean(dim=1))


def test_infers_1d_convs_and_torch_lstm_layers_with_their_function():
    torch.manual_seed(0)
    net = SequenceNet().eval()
    spec, tensors = infer_spec_and_tensors(net.state_dict())
    assert [(ly.kind, ly.name) for ly in spec.layers] == [
        ("conv1d", "conv"), ("lstm", "lstm.l0"), ("lstm", "lstm.l1"), ("global_avg_pool", ""), ("linear", "out")
    ]  # fmt: skip
    assert spec.input_shape == (2, NOMINAL_SPATIAL)
    known = [dataclasses.replace(ly, activation="relu" if ly.kind == "conv1d" else "none") for ly in spec.layers]
    x = torch.randn(6, 2, NOMINAL_SPATIAL)
    with torch.no_grad():
        torch.testing.assert_close(forward(ArchSpec(spec.input_shape, tuple(known)), tensors, x), net(x))
    g = to_neural_graph(tensors, spec)
    lstm_edges = 16 * (5 + 4 + 1) + 16 * (4 + 4 + 1)  # per layer: 4H x (inputs + recurrent + gate -> state)
    expected = (2 + 5 + 5 * 4 + 5 * 4 + 3, 5 * 2 + lstm_edges + 3 * 4)
    assert (g.num_nodes, g.num_edges) == graph_size(spec, tensors) == expected


@pytest.mark.parametrize(
    ("state_dict", "reason"),
    [
        (lambda: nn.TransformerEncoderLayer(16, 2).state_dict(), "not a sequential chain: attention"),
        (_attention_like, "not a sequential chain: blocks.0.k and blocks.0.o are parallel linear"),
        (lambda: Wrapped(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2)).state_dict(), "a LayerNorm"),
        (lambda: {"a.weight": torch.ones(3), "b.weight": torch.ones(2, 3)}, "PReLU a comes before any"),
        (lambda: Wrapped(nn.Linear(3, 4), nn.PReLU(3), nn.Linear(4, 2)).state_dict(), "a PReLU of 3 slopes after 4"),
        (lambda: {"fc.weight": torch.ones(3, 2), "final_norm.weight": torch.ones(3)}, "an RMSNorm"),
        (lambda: Wrapped(nn.Conv2d(1, 2, 3), nn.Conv1d(2, 2, 3)).state_dict(), "layers.1: conv1d after a 2-D conv"),
        (
            lambda: {"rnn.weight_ih_l0": torch.ones(10, 2), "rnn.weight_hh_l0": torch.ones(10, 5)},
            "rnn.l0: .* are not an LSTM's \\(4H x in, 4H x H\\) or a GRU's",
        ),
        (
            lambda: {**nn.LSTM(2, 3).state_dict(), "weight_ih_l0_reverse": torch.ones(12, 3)},
            "module l0: its reverse direction's tensors do not match its forward direction's",
        ),
        (lambda: Wrapped(nn.Conv3d(1, 2, 3)).state_dict(), "unsupported 5-D tensor"),
        (lambda: {"emb.weight": torch.randn(100, 8), "head.weight": torch.randn(3, 8)}, "chain breaks at head"),
        (lambda: Wrapped(nn.Linear(3, 4), nn.Linear(5, 2)).state_dict(), "chain breaks at layers.1: 5 inputs"),
        (lambda: Wrapped(nn.Conv2d(1, 2, 3), nn.Linear(7, 2)).state_dict(), "nor C·s²"),
        (lambda: Wrapped(nn.Conv2d(1, 2, (3, 1))).state_dict(), "non-square"),
        (lambda: nn.Linear(3, 2).state_dict(), "no module prefix"),
        (lambda: {"a.scale": torch.ones(3)}, "'scale' is not a weight"),
        (lambda: {}, "empty checkpoint"),
    ],
)
def test_refusals_are_clear(state_dict, reason):
    with pytest.raises(SpecError, match=reason) as info:
        infer_spec(state_dict())
    assert "\n" not in str(info.value)


def test_the_stated_activation_lets_an_inferred_chain_run_on_probes(tmp_path):
    """A chain's activation is not in its tensors: unstated, the graph has no probe features; stated (``raywse search
    --activation``), the network runs on probes; an activation raywse cannot evaluate is refused with the reason."""
    torch.manual_seed(0)
    net = Wrapped(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    path = tmp_path / "tanh_mlp.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    bare = graphify_checkpoint(str(path), "m")
    stated = graphify_checkpoint(str(path), "m", activation="tanh")
    assert bare.probe_source == "none" and not bare.probe_act.abs().sum()
    assert stated.probe_source.startswith("gaussian") and stated.probe_act.abs().sum() > 0
    x = torch.randn(5, 64)
    spec, tensors = infer_spec_and_tensors(net.state_dict(), {ACTIVATION_HINT: "tanh"})
    with torch.no_grad():
        assert (forward(spec, tensors, x) - net(x)).abs().max() < 1e-5
    with pytest.raises(GraphifyError, match="unsupported activation hint 'swish'"):
        graphify_checkpoint(str(path), "m", activation="swish")
