"""Small nets trained on sklearn digits and their neural graphs, for model tests.

Uses :func:`raywse.graph.neural_graph.to_neural_graph` and :func:`raywse.graph.symmetry.permute_hidden` when present;
otherwise a minimal local implementation of the graph contract (linear / conv2d / flatten / pooling, no batch norm).
"""

from __future__ import annotations

import importlib.util

import torch
from sklearn.datasets import load_digits
from torch_geometric.data import Data

from raywse.spec import ACTIVATIONS, ArchSpec, Layer, forward

HAVE_GRAPH = importlib.util.find_spec("raywse.graph.neural_graph") is not None
HAVE_SYMMETRY = importlib.util.find_spec("raywse.graph.symmetry") is not None

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


def _local_graph(tensors: dict[str, torch.Tensor], spec: ArchSpec, model_id: str) -> Data:
    """Minimal graph builder following docs/architecture.md (enough for the test specs)."""
    node_layers = [ly for ly in spec.layers if ly.kind in ("linear", "conv2d")]
    x_shape = torch.empty((1, *spec.input_shape), device="meta")
    n_in = spec.input_shape[0]
    bias, layer, kind, pos, act, ntype = [0.0] * n_in, [0] * n_in, [0] * n_in, list(range(n_in)), [0] * n_in, [0] * n_in
    src, dst, kernels = [], [], []
    offset_prev, n_prev, block, li = 0, n_in, (1, 1), 0
    for ly in spec.layers:
        if ly.kind in ("linear", "conv2d"):
            li += 1
            w, b = tensors[f"{ly.name}.weight"], tensors[f"{ly.name}.bias"]
            n_out = w.shape[0]
            kern = w if ly.kind == "conv2d" else w.view(n_out, n_prev, *block)
            offset = len(bias)
            is_last = li == len(node_layers)
            # activation: the layer's own or that of a following parameter-free layer
            idx = spec.layers.index(ly)
            acts = [ly.activation] + [
                f.activation for f in spec.layers[idx + 1 :] if f.kind not in ("linear", "conv2d")
            ]
            nxt = [f for f in spec.layers[idx + 1 :]]
            nxt_param = next((i for i, f in enumerate(nxt) if f.kind in ("linear", "conv2d")), len(nxt))
            a = next((s for s in acts[: 1 + nxt_param] if s != "none"), "none")
            for j in range(n_out):
                bias.append(float(b[j]))
                layer.append(li)
                kind.append(2 if is_last else 1)
                pos.append(j if is_last else -1)
                act.append(ACTIVATIONS.index(a))
                ntype.append(1 if ly.kind == "linear" else 2)
                for i in range(n_prev):
                    src.append(offset_prev + i)
                    dst.append(offset + j)
                    kernels.append(kern[j, i])
            offset_prev, n_prev, block = offset, n_out, (1, 1)
        elif ly.kind == "flatten" and x_shape.dim() == 4:
            block = (x_shape.shape[2], x_shape.shape[3])
        x_shape = forward(
            ArchSpec((), (ly,)), {k: torch.empty(v.shape, device="meta") for k, v in tensors.items()}, x_shape
        )
    kh = max(k.shape[0] for k in kernels)
    kw = max(k.shape[1] for k in kernels)
    padded = []
    for k in kernels:
        t, le = (kh - k.shape[0]) // 2, (kw - k.shape[1]) // 2
        padded.append(torch.nn.functional.pad(k, (le, kw - k.shape[1] - le, t, kh - k.shape[0] - t)).reshape(-1))
    return Data(
        x=torch.tensor(bias, dtype=torch.float32).view(-1, 1),
        node_layer=torch.tensor(layer),
        node_kind=torch.tensor(kind),
        node_pos=torch.tensor(pos),
        node_act=torch.tensor(act),
        node_type=torch.tensor(ntype),
        edge_index=torch.tensor([src, dst]),
        edge_attr=torch.stack(padded).float(),
        kernel_shape=(kh, kw),
        model_id=model_id,
        num_nodes=len(bias),
    )


def _local_permute(tensors: dict[str, torch.Tensor], spec: ArchSpec, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Permute the hidden neurons of every non-final node layer (function-preserving)."""
    out = dict(tensors)
    names = [ly.name for ly in spec.layers if ly.kind in ("linear", "conv2d")]
    for cur, nxt in zip(names[:-1], names[1:], strict=True):
        n = out[f"{cur}.weight"].shape[0]
        perm = torch.randperm(n, generator=gen)
        out[f"{cur}.weight"], out[f"{cur}.bias"] = out[f"{cur}.weight"][perm], out[f"{cur}.bias"][perm]
        w = out[f"{nxt}.weight"]
        block = w.shape[1] // n if w.dim() == 2 else 1
        if w.dim() == 2:
            out[f"{nxt}.weight"] = w.view(w.shape[0], n, block)[:, perm].reshape(w.shape[0], -1)
        else:
            out[f"{nxt}.weight"] = w[:, perm]
    return out


def to_graph(tensors: dict[str, torch.Tensor], spec: ArchSpec, model_id: str) -> Data:
    if HAVE_GRAPH:
        from raywse.graph.neural_graph import to_neural_graph

        return to_neural_graph(tensors, spec, model_id)
    return _local_graph(tensors, spec, model_id)


def permute_hidden(tensors: dict[str, torch.Tensor], spec: ArchSpec, gen: torch.Generator) -> dict[str, torch.Tensor]:
    if HAVE_SYMMETRY:
        from raywse.graph.symmetry import permute_hidden as real

        return real(tensors, spec, gen)
    return _local_permute(tensors, spec, gen)
