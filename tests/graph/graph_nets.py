"""Helpers for graph tests: real digits data and tiny nets trained on it for a few steps (via ``spec.forward``)."""

from __future__ import annotations

import contextlib
import functools
import zlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, Layer
from raywse.graph.neural_graph import to_neural_graph
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits as ``([n, 1, 8, 8] float32 in [0, 1], labels)``."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(data.target)


def make_spec(arch: str, act: str) -> ArchSpec:
    """Named tiny architectures; ``act`` is every hidden activation."""
    if arch == "mlp":
        return ArchSpec((64,), (Layer("linear", "l.0", act), Layer("linear", "l.1", act), Layer("linear", "l.2")))
    if arch == "cnn_gap":
        layers = (
            Layer("conv2d", "l.0", act, padding=1),
            Layer("max_pool2d"),
            Layer("conv2d", "l.1", act, padding=1),
            Layer("global_avg_pool"),
            Layer("linear", "l.2"),
        )
        return ArchSpec((1, 8, 8), layers)
    if arch == "cnn_flat":
        layers = (
            Layer("conv2d", "l.0", act, padding=1),
            Layer("max_pool2d"),
            Layer("conv2d", "l.1", act, padding=1),
            Layer("flatten"),
            Layer("linear", "l.2", act),
            Layer("linear", "l.3"),
        )
        return ArchSpec((1, 8, 8), layers)
    if arch == "cnn_bn":
        layers = (
            Layer("conv2d", "l.0", padding=1),
            Layer("batchnorm", "l.1", act),
            Layer("avg_pool2d"),
            Layer("conv2d", "l.2", padding=1),
            Layer("batchnorm", "l.3", act),
            Layer("flatten"),
            Layer("linear", "l.4"),
        )
        return ArchSpec((1, 8, 8), layers)
    raise ValueError(arch)


SHAPES = {
    "mlp": {"l.0": (24, 64), "l.1": (16, 24), "l.2": (10, 16)},
    "cnn_gap": {"l.0": (6, 1, 3, 3), "l.1": (8, 6, 3, 3), "l.2": (10, 8)},
    "cnn_flat": {"l.0": (4, 1, 3, 3), "l.1": (6, 4, 3, 3), "l.2": (12, 96), "l.3": (10, 12)},
    "cnn_bn": {"l.0": (5, 1, 3, 3), "l.1": (5,), "l.2": (7, 5, 3, 3), "l.3": (7,), "l.4": (10, 112)},
}


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch single-threaded: tiny ops on a shared 2-core machine are far faster without intra-op threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def inputs_for(spec: ArchSpec, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), *spec.input_shape)


@functools.cache
def trained(arch: str, act: str, steps: int = 50) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """A tiny net of ``arch`` trained with Adam on digits for ``steps`` steps (batch norms get random stats)."""
    spec = make_spec(arch, act)
    gen = torch.Generator().manual_seed(zlib.crc32(f"{arch}/{act}".encode()))
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in SHAPES[arch].items():
        if len(shape) == 1:
            tensors[f"{name}.weight"] = 1 + 0.2 * torch.randn(shape, generator=gen)
            tensors[f"{name}.bias"] = 0.1 * torch.randn(shape, generator=gen)
            tensors[f"{name}.running_mean"] = 0.3 * torch.randn(shape, generator=gen)
            tensors[f"{name}.running_var"] = 0.5 + torch.rand(shape, generator=gen)
        else:
            fan_in = torch.Size(shape[1:]).numel()
            tensors[f"{name}.weight"] = torch.randn(shape, generator=gen) / fan_in**0.5
            tensors[f"{name}.bias"] = 0.1 * torch.randn(shape[0], generator=gen)
    trainable = [t.requires_grad_() for k, t in tensors.items() if "running" not in k]
    opt = torch.optim.Adam(trainable, lr=1e-2)
    x, y = digits()
    with one_thread():
        for _ in range(steps):
            idx = torch.randint(len(x), (128,), generator=gen)
            loss = F.cross_entropy(forward_spec(spec, tensors, x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return spec, {k: v.detach() for k, v in tensors.items()}


def forward_spec(spec: ArchSpec, tensors: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    with one_thread():
        return forward(spec, tensors, inputs_for(spec, x))


def embedding_changes(
    spec: ArchSpec, tensors: dict[str, torch.Tensor], *others: dict[str, torch.Tensor]
) -> list[float]:
    """Relative change of a small seeded (untrained) encoder's embedding from the graph of ``tensors`` to the graph of
    each of ``others``: ~0 for a symmetry of the network, clearly more for a different network."""
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)).eval()
    with torch.no_grad():
        z = [encoder(encoder.prepare(to_neural_graph(t, spec, str(i)))) for i, t in enumerate((tensors, *others))]
    return [float((z[0] - other).norm() / z[0].norm()) for other in z[1:]]


def blocks_vs_reference(graph) -> float:
    """Relative difference between the embeddings of ``graph`` by the block encoder and by the PyG reference encoder
    with the same (seeded) weights: ~0 when the blocks found in the graph cover each of its weight tensors."""
    torch.manual_seed(0)
    blocks = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)).eval()
    reference = NeuralGraphEncoder(EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16, dense_blocks=False))
    reference.load_state_dict(blocks.state_dict())
    with torch.no_grad():
        a, b = blocks(blocks.prepare(graph)), reference.eval()(reference.prepare(graph))
    return float((a - b).norm() / b.norm())


def seeded_tensors(seed: int, width: int):
    """``(rand, norm)`` drawing from one seeded generator: ``rand(*shape, scale=0.3)`` random tensors, and
    ``norm(name)`` a layer norm's weight (near 1) and bias of ``width`` features under ``name``."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=gen)

    def norm(name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": 1 + rand(width, scale=0.1), f"{name}.bias": rand(width, scale=0.1)}

    return rand, norm
