"""Neural graph contract: counts, field layout, weights on edges, batch-norm folding, kernel padding."""

from __future__ import annotations

import pytest
import torch
from graph_nets import digits, forward_spec, trained
from torch import nn

from raywse.core.forward import forward
from raywse.core.spec import ACTIVATIONS, ArchSpec, Layer, SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_tensors
from raywse.graph.kernels import fit_kernels, pad_edge_features
from raywse.graph.neural_graph import fold_batchnorm, graph_size, to_neural_graph


def mlp(widths: list[int], act: str = "relu") -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    layers, tensors = [], {}
    for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        last = i == len(widths) - 2
        layers.append(Layer("linear", f"layers.{i}", "none" if last else act))
        tensors[f"layers.{i}.weight"] = torch.randn(b, a)
        tensors[f"layers.{i}.bias"] = torch.randn(b)
    return ArchSpec((widths[0],), tuple(layers)), tensors


@pytest.mark.parametrize("widths", [[4, 3], [5, 7, 2], [64, 24, 16, 10], [3, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 1]])
def test_mlp_counts_and_layout(widths):
    spec, tensors = mlp(widths)
    g = to_neural_graph(tensors, spec, "m1")
    assert (g.num_nodes, g.num_edges) == graph_size(spec, tensors)
    assert g.num_nodes == sum(widths)
    assert g.num_edges == sum(a * b for a, b in zip(widths, widths[1:], strict=False))
    assert g.model_id == "m1" and g.kernel_shape == (1, 1)
    assert g.x.dtype == torch.float32 and g.x.shape == (g.num_nodes, 1)
    assert g.edge_attr.dtype == torch.float32 and g.edge_attr.shape == (g.num_edges, 1)
    for key in ("node_layer", "node_kind", "node_pos", "node_act", "node_type", "edge_index"):
        assert g[key].dtype == torch.int64
    expected_layer = torch.cat([torch.full((w,), i) for i, w in enumerate(widths)])
    assert torch.equal(g.node_layer, expected_layer)  # ordered layer by layer
    assert torch.equal(g.node_kind[: widths[0]], torch.zeros(widths[0], dtype=torch.long))
    assert torch.equal(g.node_pos[-widths[-1] :], torch.arange(widths[-1]))
    assert torch.equal(g.node_pos[: widths[0]], torch.arange(widths[0]))
    hidden = g.node_kind == 1
    assert (g.node_pos[hidden] == -1).all() and (g.node_act[hidden] == ACTIVATIONS.index("relu")).all()
    assert (g.node_type[g.node_layer > 0] == 1).all()
    # edges run from layer l-1 to layer l, every weight and bias is where the contract says
    src, dst = g.edge_index
    assert torch.equal(g.node_layer[dst], g.node_layer[src] + 1)
    starts = [0, *torch.tensor(widths).cumsum(0).tolist()]
    for i in range(len(widths) - 1):
        w = tensors[f"layers.{i}.weight"]
        mask = g.node_layer[dst] == i + 1
        rebuilt = torch.zeros_like(w)
        rebuilt[dst[mask] - starts[i + 1], src[mask] - starts[i]] = g.edge_attr[mask, 0]
        assert torch.equal(rebuilt, w)
        assert torch.equal(g.x[starts[i + 1] : starts[i + 2], 0], tensors[f"layers.{i}.bias"])


@pytest.mark.parametrize("arch", ["cnn_gap", "cnn_flat", "cnn_bn"])
def test_cnn_counts(arch):
    spec, tensors = trained(arch, "relu", steps=0)
    g = to_neural_graph(tensors, spec)
    assert (g.num_nodes, g.num_edges) == graph_size(spec, tensors)
    expected = {"cnn_gap": (1 + 6 + 8 + 10, 6 + 48 + 80), "cnn_flat": (1 + 4 + 6 + 12 + 10, 4 + 24 + 72 + 120)}
    expected["cnn_bn"] = (1 + 5 + 7 + 10, 5 + 35 + 70)
    assert (g.num_nodes, g.num_edges) == expected[arch]
    conv = g.node_type == 2
    assert conv.sum() == {"cnn_gap": 14, "cnn_flat": 10, "cnn_bn": 12}[arch]


def test_conv_kernels_are_exact_and_flatten_blocks_resampled_by_area():
    spec, tensors = trained("cnn_flat", "relu", steps=0)
    g = to_neural_graph(tensors, spec)
    assert g.kernel_shape == (3, 3)  # the 3x3 conv kernels; the flatten's 4x4 blocks (after pooling) resampled
    kernels = g.edge_attr.reshape(-1, 3, 3)
    assert torch.equal(kernels[:4], tensors["l.0.weight"][:, 0])  # first layer: 4 filters x 1 input channel
    flat = kernels[4 + 24 : 4 + 24 + 72]  # edges channel c -> neuron j carry the 4x4 block of W
    blocks = tensors["l.2.weight"].reshape(12, 6, 4, 4).reshape(72, 4, 4)
    torch.testing.assert_close(flat, fit_kernels(blocks))
    torch.testing.assert_close(flat.sum((1, 2)), blocks.sum((1, 2)))


def test_gap_linear_uses_unit_kernels_padded():
    spec, tensors = trained("cnn_gap", "relu", steps=0)
    g = to_neural_graph(tensors, spec)
    assert g.kernel_shape == (3, 3)
    head = g.edge_attr[-80:].reshape(80, 3, 3)
    assert torch.equal(head[:, 1, 1], tensors["l.2.weight"].reshape(-1))
    assert head.abs().sum() == head[:, 1, 1].abs().sum()


def test_pad_edge_features():
    spec, tensors = mlp([3, 4, 2])
    g = to_neural_graph(tensors, spec)
    p = pad_edge_features(g, (3, 5))
    assert p.kernel_shape == (3, 5) and p.edge_attr.shape == (g.num_edges, 15)
    assert torch.equal(p.edge_attr.reshape(-1, 3, 5)[:, 1, 2], g.edge_attr[:, 0])
    torch.testing.assert_close(p.edge_attr.abs().sum(), g.edge_attr.abs().sum())  # only zeros were added
    assert g.kernel_shape == (1, 1)
    with pytest.raises(SpecError, match="smaller"):
        pad_edge_features(p, (1, 1))


def _bn_module(conv: bool) -> nn.Module:
    torch.manual_seed(0)
    if conv:
        body = [nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2)]
        body += [nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.Tanh(), nn.Flatten(), nn.Linear(80, 10)]
    else:
        body = [nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Tanh()]
        body += [nn.Linear(8, 10)]
    net = nn.Sequential(*body)
    for m in net:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n))
            m.running_var.copy_(torch.rand(n) * 3 + 0.1)
            m.weight.data.copy_(torch.randn(n))
            m.bias.data.copy_(torch.randn(n))
    return net.eval()


@pytest.mark.parametrize("conv", [False, True])
def test_fold_batchnorm_preserves_function(conv):
    net = _bn_module(conv)
    tensors = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    if conv:
        layers = [Layer("conv2d", "0", padding=1), Layer("batchnorm", "1", "relu"), Layer("max_pool2d")]
        layers += [Layer("conv2d", "4", padding=1), Layer("batchnorm", "5", "tanh"), Layer("flatten")]
        spec = ArchSpec((1, 8, 8), (*layers, Layer("linear", "8")))
    else:
        layers = [Layer("linear", "0"), Layer("batchnorm", "1", "relu"), Layer("linear", "3")]
        spec = ArchSpec((64,), (*layers, Layer("batchnorm", "4", "tanh"), Layer("linear", "6")))
    folded, folded_spec = fold_batchnorm(tensors, spec)
    assert all(ly.kind != "batchnorm" for ly in folded_spec.layers)
    assert set(folded) == set(folded_spec.tensor_names())
    assert [ly.activation for ly in folded_spec.layers if ly.kind in ("linear", "conv2d")][:2] == ["relu", "tanh"]
    x = digits()[0].reshape(-1, *spec.input_shape)
    with torch.no_grad():
        ref = net(x)
    assert (forward(spec, tensors, x) - ref).abs().max() < 1e-5
    assert (forward(folded_spec, folded, x) - ref).abs().max() < 1e-4
    g = to_neural_graph(tensors, spec)
    assert (g.num_nodes, g.num_edges) == graph_size(spec, tensors)
    assert torch.allclose(g.x[-10:, 0], folded[f"{spec.layers[-1].name}.bias"])


def test_fold_refuses_unfoldable_batchnorm():
    spec, tensors = trained("cnn_bn", "relu", steps=0)
    after_act = ArchSpec(spec.input_shape, (Layer("conv2d", "l.0", "relu", padding=1), *spec.layers[1:]))
    with pytest.raises(SpecError, match="follows the relu of l.0"):
        to_neural_graph(tensors, after_act)
    after_pool = ArchSpec(spec.input_shape, (spec.layers[0], Layer("avg_pool2d"), spec.layers[1], *spec.layers[3:]))
    with pytest.raises(SpecError, match="does not directly follow"):
        fold_batchnorm(tensors, after_pool)


def test_unsupported_specs_raise_spec_error():
    spec, tensors = mlp([4, 3, 2])
    two_acts = ArchSpec(
        (4,), (Layer("linear", "layers.0", "relu"), Layer("flatten", activation="tanh"), spec.layers[1])
    )
    with pytest.raises(SpecError, match="several activations"):
        to_neural_graph(tensors, two_acts)
    with pytest.raises(SpecError, match="missing tensors"):
        to_neural_graph({"layers.0.weight": tensors["layers.0.weight"]}, spec)


def test_graphs_of_one_architecture_share_no_tensor_so_editing_one_leaves_the_next_intact():
    """The structure of an architecture is computed once and reused; every graph still owns its tensors."""
    spec, tensors = mlp([5, 7, 2])
    first = to_neural_graph(tensors, spec)
    expected = {key: value.clone() for key, value in first if isinstance(value, torch.Tensor)}
    for key in expected:
        first[key].fill_(7)
    second = to_neural_graph(tensors, spec)
    for key, value in expected.items():
        assert torch.equal(second[key], value), key
    assert torch.equal(second.edge_index, to_neural_graph(tensors, spec, validated=True).edge_index)


def test_a_batch_norm_whose_folded_weights_overflow_float32_is_refused():
    spec, tensors = trained("cnn_bn", "relu", steps=0)
    bn = next(ly.name for ly in spec.layers if ly.kind == "batchnorm")
    tensors = {**tensors, f"{bn}.running_var": torch.full_like(tensors[f"{bn}.running_var"], 1e-38)}
    tensors[f"{bn}.weight"] = torch.full_like(tensors[f"{bn}.weight"], 3e38)
    with pytest.raises(SpecError, match="NaN or Inf"):
        to_neural_graph(tensors, spec)


def test_a_float64_checkpoint_whose_weights_overflow_float32_is_refused():
    spec, tensors = mlp([5, 7, 2])
    tensors = {k: v.double() for k, v in tensors.items()}
    tensors["layers.0.weight"][0, 0] = 1e300  # finite as float64, infinite as the float32 graphify computes in
    with pytest.raises(GraphifyError, match="NaN or Inf") as info:
        graphify_tensors(tensors, {}, "m", spec.to_json())
    assert info.value.stage == "graph"


def test_graph_of_trained_net_matches_reference_semantics():
    spec, tensors = trained("mlp", "tanh")
    g = to_neural_graph(tensors, spec)
    out = forward_spec(spec, tensors, digits()[0][:5])
    assert out.shape == (5, 10) and g.num_nodes == 64 + 24 + 16 + 10
    assert (g.node_act[64:-10] == ACTIVATIONS.index("tanh")).all() and (g.node_act[-10:] == 0).all()


def _conv_net(kernel: torch.Tensor, padding: int) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    spec = ArchSpec((1, 8, 8), (Layer("conv2d", "c", "relu", padding=padding), Layer("global_avg_pool"),
                                Layer("linear", "fc")))  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    tensors = {"c.weight": kernel, "c.bias": torch.randn(4, generator=gen),
               "fc.weight": torch.randn(3, 4, generator=gen), "fc.bias": torch.zeros(3)}  # fmt: skip
    return spec, tensors


def test_a_zero_padded_5x5_twin_of_a_3x3_net_has_the_same_graph():
    """Same function, same graph: all-zero border rows/columns are dropped before any resampling."""
    k3 = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    spec3, t3 = _conv_net(k3, padding=1)
    spec5, t5 = _conv_net(nn.functional.pad(k3, (1, 1, 1, 1)), padding=2)
    x = digits()[0][:16].reshape(-1, 1, 8, 8)
    torch.testing.assert_close(forward(spec5, t5, x), forward(spec3, t3, x))
    g3, g5 = to_neural_graph(t3, spec3, "k3"), to_neural_graph(t5, spec5, "k5")
    assert g5.kernel_shape == g3.kernel_shape == (3, 3)
    assert torch.equal(g5.edge_attr, g3.edge_attr)
    torch.testing.assert_close(g5.probe_act, g3.probe_act)


def test_large_kernels_are_resampled_by_area_to_3x3_keeping_their_sums():
    k7 = torch.randn(4, 1, 7, 7, generator=torch.Generator().manual_seed(0))
    spec, tensors = _conv_net(k7, padding=3)
    g = to_neural_graph(tensors, spec, "k7")
    assert g.kernel_shape == (3, 3)
    conv_edges = g.edge_attr[:4]
    torch.testing.assert_close(conv_edges.sum(-1), k7.reshape(4, -1).sum(-1), rtol=1e-5, atol=1e-5)
    # a constant kernel stays constant (each of the 3×3 cells covers 49 / 9 of its cells)
    flat = fit_kernels(torch.ones(1, 7, 7))
    torch.testing.assert_close(flat, torch.full((1, 3, 3), 49 / 9))
    # resampled, not trimmed (no zero border): the top-left corner's weight stays in the top-left cell
    corner = torch.full((1, 6, 6), 0.01)
    corner[0, 0, 0] = 1.0
    fitted = fit_kernels(corner)[0]
    assert fitted.argmax() == 0 and float(fitted[0, 0]) == pytest.approx(1.0 + 3 * 0.01)
