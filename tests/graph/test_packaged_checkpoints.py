"""Real pretrained checkpoints from installed packages (MTCNN's P-/R-/O-Net with PReLUs and output heads, an MNIST
CNN, silero-vad's STFT conv, 1-D convs and LSTM cell): graphified with node and edge counts that match their modules,
symmetries exact; silero-vad is refused without its spec file (names cannot order it) and graphified with it, and the
spec file computes the package's own TorchScript model exactly; all-MiniLM-L6-v2 (BERT) is inferred with the heads of
its config.json, one node per feature and one edge per weight (time and memory: bench/bench_large_graph.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from graph_nets import embedding_changes
from safetensors.torch import load_file

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, with_zero_biases
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint, read_spec_file
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.probes import INFERRED, probe_rows
from raywse.graph.schema import NodeKind
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder
from raywse.zoo.datasets import load_task, probe_inputs
from raywse.zoo.probe_catalogue import zoo_catalogue

sys.path.insert(0, str(Path(__file__).parents[1]))
from packaged import (  # noqa: E402
    DIGIT_RECOGNIZER_SPEC,
    MINILM,
    PACKAGED,
    SILERO_JIT,
    SILERO_SPEC,
    SILERO_VAD,
    package_file,
    packaged_tensors,
    write_packaged,
)

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


def test_the_mnist_cnn_with_its_spec_is_probed_on_the_zoos_mnist_images_and_classifies_them(tmp_path):
    """Its spec stated, digit-recognizer-py's CNN (28x28 MNIST, normalisation unstated) is probed on mnist14's probe
    images at 28x28 (so compared with the zoo's mnist14 models) under the normalisation it answers best, and its
    output responses classify those train-split images as their labels say."""
    path = write_packaged("digit_recognizer", tmp_path)
    g = graphify_checkpoint(str(path), "digit_recognizer", fallback_spec=read_spec_file(DIGIT_RECOGNIZER_SPEC),
                            catalogue=zoo_catalogue)  # fmt: skip
    assert probe_rows(g.probe_source) == "train:mnist14" and g.probe_source.endswith("mnist28" + INFERRED)
    task = load_task("mnist14/all10", "unit")
    probes = probe_inputs("mnist14", "unit")
    at = [int(torch.cdist(row[None], task.x_train).argmin()) for row in probes]  # each probe's train row
    predicted = g.probe_act[g.node_kind == NodeKind.OUTPUT].argmax(0)
    assert (predicted == task.y_train[at]).float().mean() > 0.95
    assert graphify_checkpoint(str(path), "d", fallback_spec=read_spec_file(DIGIT_RECOGNIZER_SPEC)).probe_source == (
        "gaussian:1x28x28"
    )  # no catalogue: nothing known of its inputs


def test_silero_vad_is_refused_without_its_spec_file_and_graphified_with_it():
    path = package_file(*SILERO_VAD)
    with pytest.raises(GraphifyError) as info:
        graphify_checkpoint(str(path), "silero_vad")
    # by name, final_conv comes before lstm_cell (and stft_conv last): no chain
    assert info.value.reason == "chain breaks at lstm_cell: 128 input channels, previous layer has 1"
    assert "\n" not in str(info.value)
    g = graphify_checkpoint(str(path), "silero_vad", fallback_spec=read_spec_file(SILERO_SPEC))
    # from silero_vad/tinygrad_model.py: stft 1 -> 258 (k 256), |.| 258 -> 129, conv1-4 129 -> 128 -> 64 -> 64 -> 128
    # (k 3), LSTMCell(128, 128), final_conv 128 -> 1 (k 1)
    convs = [(258, 1), (128, 129), (64, 128), (64, 64), (128, 64), (1, 128)]
    hidden = 128
    assert g.num_nodes == 1 + 258 + 129 + 128 + 64 + 64 + 128 + 5 * hidden + 1
    assert g.num_edges == sum(o * i for o, i in convs) + 258 + 4 * hidden * (128 + hidden + 1)
    tensors = load_file(path)  # and from the tensors: one edge per (out, in) pair of a conv (the kernel
    # its features), per LSTM weight entry, per magnitude input and gate -> state link; one node per bias entry
    # (stft_conv has none: 258), magnitude and hidden-state neuron, and per gate (its two biases summed)
    per_pair = sum(t.shape[0] * t.shape[1] for t in tensors.values() if t.dim() == 3)
    lstm = tensors["lstm_cell.weight_ih"].numel() + tensors["lstm_cell.weight_hh"].numel()
    assert g.num_edges == per_pair + lstm + 258 + 4 * hidden
    conv_biases = sum(t.numel() for k, t in tensors.items() if k.endswith(".bias"))
    assert g.num_nodes == 1 + 258 + conv_biases + 129 + tensors["lstm_cell.bias_ih"].numel() + hidden
    assert g.kernel_shape == (1, 3) and bool(torch.isfinite(g.edge_attr).all()) and g.probe_source != "none"


def test_the_silero_spec_file_computes_the_packaged_torchscript_model_exactly():
    """The package's TorchScript model (``silero_vad.jit``: its own weights, the same layers) on a 512-sample chunk
    after a fresh reset = the spec on the chunk with its 64 context samples (zeros) and 64 reflected ones."""
    model = torch.jit.load(str(package_file(*SILERO_JIT)), map_location="cpu").eval()
    scripted = [t for k, t in model.state_dict().items() if k.startswith("_model.")]  # the 16 kHz net, in layer order
    spec = ArchSpec.from_json(read_spec_file(SILERO_SPEC))
    names = list(load_file(package_file(*SILERO_VAD)))
    tensors = with_zero_biases(spec, dict(zip(names, scripted, strict=True)))
    gen = torch.Generator().manual_seed(0)
    chunk = 0.1 * torch.randn(4, 512, generator=gen)
    with torch.no_grad():
        model.reset_states()
        expected = model(chunk, 16000)
        framed = torch.nn.functional.pad(torch.cat([torch.zeros(4, 64), chunk], 1), (0, 64), mode="reflect")
        torch.testing.assert_close(forward(spec, tensors, framed.unsqueeze(1)), expected, rtol=1e-5, atol=1e-6)
    twin = rescale_hidden(permute_hidden(tensors, spec, gen), spec, gen)  # LSTM units, STFT pairs, conv channels
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, twin, framed.unsqueeze(1)), expected, rtol=1e-4, atol=1e-5)
    assert embedding_changes(spec, tensors, twin)[0] < 1e-4


def test_minilm_graphifies_with_a_node_per_feature_and_an_edge_per_weight():
    path = package_file(*MINILM)
    config = json.loads((path.parent / "config.json").read_text())
    g = graphify_checkpoint(str(path), "minilm")
    width, ffn, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads, rows = config["num_attention_heads"], config["vocab_size"] + config["max_position_embeddings"] + 2
    # inputs: table rows; per layer: q, k, v, O, LN, W1, W2, LN; the embeddings, their LN, the pooler
    assert g.num_nodes == rows + 2 * width + layers * (6 * width + ffn + width) + width
    per_layer = 4 * width * width + 2 * width * width // heads + 2 * width * ffn + 2 * width + 2 * width
    assert g.num_edges == rows * width + width + layers * per_layer + width * width
    tensors = load_file(path)
    weights = sum(t.numel() for k, t in tensors.items() if t.dim() == 2 and t.is_floating_point())
    fixed = layers * (2 * width * width // heads + 2 * width)  # same-head and identity edges: structure, not weights
    scales = (1 + 2 * layers) * width  # one layer-norm scale per edge
    assert g.num_edges == weights + fixed + scales
    assert g.kernel_shape == (1, 1) and g.probe_source == f"tokens:{config['vocab_size']}x16"
