"""Small nets (MLP, CNN with global pooling, CNN with flatten) trained on sklearn digits, for model tests."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, Layer

MLP_SPEC = ArchSpec(
    (64,),
    (
        Layer("linear", "layers.0", "relu"),
        Layer("linear", "layers.1", "relu"),
        Layer("linear", "layers.2"),
    ),
)
CNN_SPEC = ArchSpec(
    (1, 8, 8),
    (
        Layer("conv2d", "layers.0", "relu", padding=1),
        Layer("conv2d", "layers.1", "relu"),
        Layer("global_avg_pool", "layers.2"),
        Layer("linear", "layers.3"),
    ),
)
FLAT_CNN_SPEC = ArchSpec(
    (1, 8, 8),
    (
        Layer("conv2d", "layers.0", "relu"),
        Layer("max_pool2d", "layers.1"),
        Layer("flatten", "layers.2"),
        Layer("linear", "layers.3", "relu"),
        Layer("linear", "layers.4"),
    ),
)
SHAPES = {
    "mlp": {"layers.0": (12, 64), "layers.1": (8, 12), "layers.2": (10, 8)},
    "cnn": {"layers.0": (4, 1, 3, 3), "layers.1": (6, 4, 3, 3), "layers.3": (10, 6)},
    "flat_cnn": {"layers.0": (3, 1, 3, 3), "layers.3": (7, 27), "layers.4": (10, 7)},
}
SPECS = {"mlp": MLP_SPEC, "cnn": CNN_SPEC, "flat_cnn": FLAT_CNN_SPEC}


def train_net(kind: str, seed: int, steps: int = 20) -> dict[str, torch.Tensor]:
    """Train a tiny net of ``kind`` on sklearn digits for a few Adam steps."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in SHAPES[kind].items():
        fan_in = torch.tensor(shape[1:]).prod().item()
        tensors[f"{name}.weight"] = (torch.randn(shape, generator=gen) / fan_in**0.5).requires_grad_()
        tensors[f"{name}.bias"] = (torch.randn(shape[0], generator=gen) * 0.1).requires_grad_()
    digits = load_digits()
    x = torch.tensor(digits.data[:256], dtype=torch.float32) / 16
    y = torch.tensor(digits.target[:256])
    spec = SPECS[kind]
    x = x.view(-1, *spec.input_shape)
    opt = torch.optim.Adam(tensors.values(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(forward(spec, tensors, x), y).backward()
        opt.step()
    return {k: v.detach() for k, v in tensors.items()}
