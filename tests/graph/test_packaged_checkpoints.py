"""Real pretrained checkpoints from installed packages (MTCNN's P-/R-/O-Net with PReLUs and output heads, an MNIST
CNN): graphified with node and edge counts that match their modules, PReLU symmetries exact; silero-vad (a conv1d
STFT front end, conv1d layers and an LSTM cell) refused by tensor name and reason."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from raywse.core.forward import forward
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.schema import NodeKind
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

sys.path.insert(0, str(Path(__file__).parents[1]))
from packaged import PACKAGED, SILERO_VAD, package_file, packaged_tensors, write_packaged  # noqa: E402

# (input channels, [(layer, outputs, input neurons)]) read off each module's definition: MTCNN's nets in
# facenet_pytorch/models/mtcnn.py (heads concatenated), digit-recognizer's CNN (3 convs, flatten of 128×3×3, 2 linear)
MODULES = {
    "mtcnn_pnet": (3, [("conv1", 10, 3), ("conv2", 16, 10), ("conv3", 32, 16), ("conv4_1+4_2", 2 + 4, 32)]),
    "mtcnn_rnet": (
        3,
        [("conv1", 28, 3), ("conv2", 48, 28), ("conv3", 64, 48), ("dense4", 128, 64), ("dense5_1+5_2", 2 + 4, 128)],
    ),  # fmt: skip
    "mtcnn_onet": (
        3,
        [
            ("conv1", 32, 3),
            ("conv2", 64, 32),
            ("conv3", 64, 64),
            ("conv4", 128, 64),
            ("dense5", 256, 128),
            ("dense6_1+6_2+6_3", 2 + 4 + 10, 256),
        ],
    ),  # fmt: skip
    "digit_recognizer": (
        1,
        [("conv0", 32, 1), ("conv3", 64, 32), ("conv6", 128, 64), ("fc0", 256, 128), ("fc2", 10, 256)],
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_checkpoints_graphify_with_the_counts_of_their_modules(name, tmp_path):
    path = write_packaged(name, tmp_path)
    g = graphify_checkpoint(str(path), name)
    inputs, layers = MODULES[name]
    assert g.num_nodes == inputs + sum(out for _, out, _ in layers)
    assert g.num_edges == sum(out * fan_in for _, out, fan_in in layers)
    tensors = packaged_tensors(name)
    biases = sum(t.numel() for k, t in tensors.items() if k.endswith(".bias"))
    assert int((g.node_kind != NodeKind.INPUT).sum()) == biases  # one node per bias entry
    slopes = torch.cat([t for k, t in tensors.items() if k.startswith("prelu")]) if "mtcnn" in name else None
    if slopes is not None:  # every hidden neuron carries its PReLU's learned slope, in layer order
        hidden = g.node_kind == NodeKind.HIDDEN
        torch.testing.assert_close(g.act_slope[hidden], slopes)
    assert g.kernel_shape == (3, 3) and torch.isfinite(g.edge_attr).all()


@pytest.mark.parametrize("name", ["mtcnn_pnet", "mtcnn_rnet"])
def test_prelu_nets_keep_their_function_and_embedding_under_permutation_and_rescaling(name):
    spec, tensors = infer_spec_and_tensors(packaged_tensors(name))
    assert rescalable_layers(spec)  # PReLU is positively homogeneous
    gen = torch.Generator().manual_seed(0)
    twin = rescale_hidden(permute_hidden(tensors, spec, gen), spec, gen)
    x = torch.randn(16, *spec.input_shape, generator=gen)
    torch.testing.assert_close(forward(spec, twin, x), forward(spec, tensors, x), rtol=1e-4, atol=1e-5)
    a, b = to_neural_graph(tensors, spec, name), to_neural_graph(twin, spec, name)
    assert not torch.equal(a.act_slope, b.act_slope)  # the slopes moved with their neurons
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)).eval()
    with torch.no_grad():
        za, zb = encoder(encoder.prepare(a)), encoder(encoder.prepare(b))
    assert float((za - zb).norm() / za.norm()) < 1e-4


def test_silero_vad_is_refused_by_its_layer_and_reason():
    path = package_file(*SILERO_VAD)
    with pytest.raises(GraphifyError) as info:
        graphify_checkpoint(str(path), "silero_vad")
    assert info.value.reason == "unsupported 3-D tensor conv1.weight [128, 129, 3]"  # its conv1d layers come first
    assert "\n" not in str(info.value)
