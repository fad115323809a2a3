"""Residual connections: torchvision-named ResNets (basic and bottleneck blocks) are inferred exactly, graphified
with identity and projection edges, and their symmetries (tied permutations) keep function and embedding."""

from __future__ import annotations

import pytest
import torch
from graph_nets import embedding_changes
from resnets import TinyResNet, randomised

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.schema import NodeKind
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden, residual_layers
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


def resnet(bottleneck: bool = False) -> tuple[TinyResNet, ArchSpec, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    net = randomised(TinyResNet(bottleneck=bottleneck))
    spec, tensors = infer_spec_and_tensors(net.state_dict())
    return net, spec, tensors


@pytest.mark.parametrize("bottleneck", [False, True])
def test_torchvision_resnets_are_inferred_with_their_function(bottleneck):
    net, spec, tensors = resnet(bottleneck)
    adds = [ly for ly in spec.layers if ly.kind == "add"]
    assert len(adds) == 3 and all(ly.activation == "relu" for ly in adds)
    assert [bool(ly.name) for ly in adds] == ([False, False, True] if not bottleneck else [True, False, True])
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        assert (forward(spec, tensors, x) - net(x)).abs().max() < 1e-5


def test_residual_graph_counts_identity_and_projection_edges():
    _, spec, tensors = resnet()
    g = to_neural_graph(tensors, spec, "resnet")
    w = 8  # stem and layer1 width; layer2 is 16 wide, fc has 10 outputs
    assert g.num_nodes == 1 + w + 4 * w + 2 * (2 * w) + 10
    convs = 1 * w + 4 * (w * w) + (w * 2 * w) + (2 * w) ** 2
    identity, projection = 2 * w, w * 2 * w
    assert g.num_edges == convs + identity + projection + 2 * w * 10
    assert int(g.node_layer.max()) == 8 and int((g.node_kind == NodeKind.OUTPUT).sum()) == 10
    # the first block's identity: stem neuron i -> block output neuron i, a centred 1
    src, dst = g.edge_index
    into_block = (g.node_layer[src] == 1) & (g.node_layer[dst] == 3)
    assert int(into_block.sum()) == w and torch.equal(dst[into_block] - src[into_block], torch.full((w,), 2 * w))
    assert torch.equal(g.edge_attr[into_block], torch.tensor([[0, 0, 0, 0, 1.0, 0, 0, 0, 0]]).expand(w, 9))


def test_permutations_are_tied_across_identity_residuals_and_keep_function_and_embedding():
    net, spec, tensors = resnet()
    gen = torch.Generator().manual_seed(0)
    twin = permute_hidden(tensors, spec, gen)
    assert not torch.equal(twin["conv1.weight"], tensors["conv1.weight"])  # the residual stream moved too
    x = torch.randn(6, 1, 8, 8, generator=gen)
    torch.testing.assert_close(forward(spec, twin, x), forward(spec, tensors, x), rtol=1e-4, atol=1e-5)
    assert residual_layers(spec) == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2"}
    assert set(rescalable_layers(spec)) == {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1"}
    scaled = rescale_hidden(twin, spec, gen)
    torch.testing.assert_close(forward(spec, scaled, x), forward(spec, tensors, x), rtol=1e-4, atol=1e-5)
    assert embedding_changes(spec, tensors, scaled)[0] < 1e-4


def test_bad_residuals_are_refused_in_one_line():
    net, _, _ = resnet()
    with pytest.raises(SpecError, match="outside torchvision's ResNet layout: layer1.0.extra.weight"):
        infer_spec_and_tensors({**net.state_dict(), "layer1.0.extra.weight": torch.ones(2)})
    without = {k: v for k, v in net.state_dict().items() if k != "layer2.0.bn2.running_var"}
    with pytest.raises(SpecError, match="torchvision ResNet layout without layer2.0.bn2.running_var"):
        infer_spec_and_tensors(without)
    spec = ArchSpec((4,), (Layer("linear", "a", "relu"), Layer("linear", "b"), Layer("add", source="a")))
    weights = {"a.weight": torch.ones(3, 4), "a.bias": torch.zeros(3), "b.weight": torch.ones(2, 3),
               "b.bias": torch.zeros(2)}  # fmt: skip
    with pytest.raises(SpecError, match="do not chain") as info:  # 3 neurons added to 2
        spec.validate(weights)
    assert "\n" not in str(info.value)
    with pytest.raises(SpecError, match="add reads 'b', which is not an earlier"):
        forward(ArchSpec((4,), (Layer("linear", "a"), Layer("linear", "b"), Layer("add", source="b"))),
                weights | {"b.weight": torch.ones(3, 3), "b.bias": torch.zeros(3)}, torch.ones(1, 4))  # fmt: skip


def test_a_residual_after_a_nonlinearity_and_bad_layers_are_refused():
    weights = {"a.weight": torch.ones(3, 4), "a.bias": torch.zeros(3), "b.weight": torch.ones(3, 3),
               "b.bias": torch.zeros(3)}  # fmt: skip
    after = ArchSpec((4,), (Layer("linear", "a", "relu"), Layer("linear", "b", "relu"), Layer("add", source="a")))
    torch.testing.assert_close(forward(after, weights, torch.ones(1, 4)), torch.full((1, 3), 16.0))  # it runs...
    with pytest.raises(SpecError, match="residual add after the nonlinearity of linear 'b'"):
        to_neural_graph(weights, after)  # ...but its skip edges would add into b's pre-activation
    conv = ArchSpec((4,), (Layer("conv2d", "a"), Layer("linear", "b")))
    with pytest.raises(SpecError, match="a 2-D weight"):
        conv.validate(weights)
    with pytest.raises(SpecError, match="stride and kernel_size must be >= 1"):
        Layer("conv2d", "a", stride=0)


def test_the_block_encoder_reads_residual_edges_as_the_edge_list_reference_does():
    _, spec, tensors = resnet(bottleneck=True)
    graph = to_neural_graph(tensors, spec, "resnet")
    out = []
    for dense in (True, False):
        torch.manual_seed(0)
        encoder = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16,
                                                   dense_blocks=dense)).eval()  # fmt: skip
        with torch.no_grad():
            out.append(encoder(encoder.prepare(graph)))
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-6)
