"""Batched training: many same-shaped tiny networks trained as ONE tensor program.

``M`` models of one architecture keep their parameters stacked (``[M, *shape]``). Linear layers are batched matmuls
(``baddbmm``), conv layers one grouped convolution (``groups=M`` over an input ``[B, M*Cin, H, W]``); every model
draws its own minibatch indices and has its own learning rate and weight decay (broadcast tensors). The optimizer is
a hand-written Adam over the stacked tensors, so a step costs O(#layers) kernel launches, not O(M).

:func:`train_reference` trains one model the plain way (``nn.Module`` + ``torch.optim.Adam``) on the same minibatches;
it is the semantics :func:`train_batched` must reproduce, and the baseline the bench compares against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from raywse.spec import ArchSpec, Layer, activate, forward

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class Arch:
    """A zoo architecture: an MLP (``widths`` = hidden widths) or a CNN (``channels``/``strides`` of 3×3 convs,
    global average pooling, then ``widths`` hidden linear layers and the linear head)."""

    family: str
    widths: tuple[int, ...] = ()
    activation: str = "relu"
    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()

    def spec(self, input_shape: tuple[int, ...]) -> ArchSpec:
        """The :class:`ArchSpec` of this architecture; parametric layer ``i`` owns ``layers.{i}.weight/bias``."""
        layers: list[Layer] = []
        for stride in self.strides:
            layers.append(Layer("conv2d", f"layers.{len(layers)}", self.activation, stride=stride, padding=1))
        if self.family == "cnn":
            layers.append(Layer("global_avg_pool"))
        for _ in self.widths:
            layers.append(Layer("linear", f"layers.{len(layers)}", self.activation))
        layers.append(Layer("linear", f"layers.{len(layers)}", "none"))
        return ArchSpec(tuple(input_shape), tuple(layers))

    def param_shapes(self, input_shape: tuple[int, ...], num_classes: int) -> list[tuple[str, tuple[int, ...]]]:
        """``(tensor name, shape)`` of every parameter, in the spec's tensor order."""
        spec = self.spec(input_shape)
        fan_in = input_shape[0]
        conv_out = iter(self.channels)
        lin_out = iter((*self.widths, num_classes))
        shapes = []
        for layer in spec.layers:
            if layer.kind == "conv2d":
                out = next(conv_out)
                shapes += [(f"{layer.name}.weight", (out, fan_in, 3, 3)), (f"{layer.name}.bias", (out,))]
                fan_in = out
            elif layer.kind == "linear":
                out = next(lin_out)
                shapes += [(f"{layer.name}.weight", (out, fan_in)), (f"{layer.name}.bias", (out,))]
                fan_in = out
        return shapes

    def describe(self) -> str:
        """Short human text, e.g. ``MLP 64-32 tanh`` or ``CNN conv 8-16/s2 + GAP + linear relu``."""
        if self.family == "mlp":
            return f"MLP hidden {'-'.join(map(str, self.widths))} {self.activation}"
        convs = "-".join(f"{c}/s{s}" if s > 1 else str(c) for c, s in zip(self.channels, self.strides, strict=True))
        head = f" + hidden {'-'.join(map(str, self.widths))}" if self.widths else ""
        return f"CNN conv3x3 {convs} {self.activation} + global avg pool{head} + linear head"

    def to_dict(self) -> dict:
        return asdict(self)

    def macs_per_sample(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        """Multiply-accumulates of one forward pass on one sample."""
        total, hw = 0, tuple(input_shape[1:])
        for name, shape in self.param_shapes(input_shape, num_classes):
            if not name.endswith(".weight"):
                continue
            if len(shape) == 4:
                idx = int(name.split(".")[1])
                stride = self.strides[idx]
                hw = tuple((d - 1) // stride + 1 for d in hw)
                total += shape[0] * shape[1] * 9 * math.prod(hw)
            else:
                total += shape[0] * shape[1]
        return total


def init_params(arch: Arch, input_shape: tuple[int, ...], num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """PyTorch-default init (uniform ±1/sqrt(fan_in) for weights and biases) from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    shapes = arch.param_shapes(input_shape, num_classes)
    for (wname, wshape), (bname, bshape) in zip(shapes[::2], shapes[1::2], strict=True):
        bound = 1.0 / math.sqrt(math.prod(wshape[1:]))
        out[wname] = (torch.rand(wshape, generator=gen) * 2 - 1) * bound
        out[bname] = (torch.rand(bshape, generator=gen) * 2 - 1) * bound
    return out


def minibatch_indices(n: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """Per-step minibatch indices ``[steps, batch_size]`` (sampled with replacement) of one model."""
    gen = torch.Generator().manual_seed(seed + 7919)
    return torch.randint(n, (steps, batch_size), generator=gen)


def batched_forward(spec: ArchSpec, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Forward ``M`` stacked models; ``x`` is ``[M, B, *input_shape]``; returns logits ``[M, B, C]``."""
    m, b = x.shape[:2]
    h = x
    for layer in spec.layers:
        if layer.kind == "conv2d":
            if h.dim() == 5:  # [M, B, C, H, W] -> [B, M*C, H, W]
                h = h.transpose(0, 1).reshape(b, m * h.shape[2], *h.shape[3:])
            w = params[f"{layer.name}.weight"]
            h = F.conv2d(
                h,
                w.reshape(-1, *w.shape[2:]),
                params[f"{layer.name}.bias"].reshape(-1),
                stride=layer.stride,
                padding=layer.padding,
                groups=m,
            )
        elif layer.kind == "global_avg_pool":
            h = h.mean(dim=(2, 3)).reshape(b, m, -1).transpose(0, 1)
        elif layer.kind == "linear":
            w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
        else:
            raise ValueError(f"batched training does not support layer kind {layer.kind}")
        h = activate(h, layer.activation)
    return h


@dataclass
class BatchedResult:
    """Stacked trained parameters ``[M, ...]`` and per-model accuracies (test accuracy via :func:`forward`)."""

    params: dict[str, torch.Tensor]
    train_acc: list[float]
    test_acc: list[float]


def train_batched(
    spec: ArchSpec,
    init: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Train ``M`` models with Adam (L2 weight decay as ``torch.optim.Adam``) on per-model minibatches.

    ``init``: stacked parameters ``[M, ...]``; ``x``: flat inputs ``[N, d]``; ``indices``: ``[steps, M, B]``;
    ``lr``/``weight_decay``: ``[M]``. Returns the trained stacked parameters.
    """
    names = spec.tensor_names()
    params = [init[k].clone().requires_grad_(True) for k in names]
    m_state = [torch.zeros_like(p) for p in params]
    v_state = [torch.zeros_like(p) for p in params]
    lr_b = [lr.view(-1, *([1] * (p.dim() - 1))) for p in params]
    wd_b = [weight_decay.view(-1, *([1] * (p.dim() - 1))) for p in params]
    use_wd = bool((weight_decay != 0).any())
    steps, m, b = indices.shape
    beta1, beta2 = ADAM_BETAS
    for t in range(1, steps + 1):
        idx = indices[t - 1]
        xb = x[idx].view(m, b, *spec.input_shape)
        logits = batched_forward(spec, dict(zip(names, params, strict=True)), xb)
        loss = F.cross_entropy(logits.reshape(m * b, -1), y[idx].reshape(-1), reduction="sum") / b
        grads = torch.autograd.grad(loss, params)
        bc1, bc2_sqrt = 1 - beta1**t, math.sqrt(1 - beta2**t)
        with torch.no_grad():
            for p, g, mm, vv, lrp, wdp in zip(params, grads, m_state, v_state, lr_b, wd_b, strict=True):
                if use_wd:
                    g = g.addcmul(p, wdp)
                mm.lerp_(g, 1 - beta1)
                vv.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (vv.sqrt() / bc2_sqrt).add_(ADAM_EPS)
                p.sub_((mm / denom).mul_(lrp / bc1))
    return {k: p.detach() for k, p in zip(names, params, strict=True)}


@torch.no_grad()
def batched_accuracy(spec: ArchSpec, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy of every stacked model on ``(x, y)`` (evaluated in sample chunks to bound memory)."""
    m = next(iter(params.values())).shape[0]
    correct = torch.zeros(m, dtype=torch.int64)
    for start in range(0, len(x), 512):
        xb = x[start : start + 512]
        xv = xb.view(1, len(xb), *spec.input_shape)
        logits = batched_forward(spec, params, xv.expand(m, *xv.shape[1:]))
        correct += (logits.argmax(-1) == y[start : start + 512]).sum(-1)
    return (correct.double() / len(x)).tolist()


@torch.no_grad()
def model_accuracy(spec: ArchSpec, tensors: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of one model through the reference :func:`raywse.spec.forward` (what a checkpoint computes)."""
    pred = forward(spec, tensors, x.reshape(-1, *spec.input_shape)).argmax(-1)
    return int((pred == y).sum()) / len(y)


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


_ACT_MODULES = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.01), "tanh": nn.Tanh, "gelu": nn.GELU}


def spec_module(spec: ArchSpec, tensors: dict[str, torch.Tensor]) -> nn.Sequential:
    """A plain ``nn.Sequential`` computing the same function as ``spec`` with a copy of ``tensors``."""
    mods: list[nn.Module] = []
    for layer in spec.layers:
        if layer.kind == "linear":
            w = tensors[f"{layer.name}.weight"]
            mod = nn.Linear(w.shape[1], w.shape[0])
        elif layer.kind == "conv2d":
            w = tensors[f"{layer.name}.weight"]
            mod = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=layer.stride, padding=layer.padding)
        else:
            mod = _GlobalAvgPool()
        if layer.parametric:
            with torch.no_grad():
                mod.weight.copy_(tensors[f"{layer.name}.weight"])
                mod.bias.copy_(tensors[f"{layer.name}.bias"])
        mods.append(mod)
        if layer.activation != "none":
            mods.append(_ACT_MODULES[layer.activation]())
    return nn.Sequential(*mods)


def module_tensors(spec: ArchSpec, module: nn.Sequential) -> dict[str, torch.Tensor]:
    """Inverse of :func:`spec_module`: the module's parameters under the spec's tensor names."""
    params = [p.detach().clone() for p in module.parameters()]
    return dict(zip(spec.tensor_names(), params, strict=True))


def train_reference(
    spec: ArchSpec,
    init: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    lr: float,
    weight_decay: float,
) -> dict[str, torch.Tensor]:
    """Train one model the plain way (``nn.Module`` + ``torch.optim.Adam``); ``indices`` is ``[steps, B]``."""
    model = spec_module(spec, init)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, betas=ADAM_BETAS, eps=ADAM_EPS)
    for idx in indices:
        opt.zero_grad()
        loss = F.cross_entropy(model(x[idx].view(len(idx), *spec.input_shape)), y[idx])
        loss.backward()
        opt.step()
    return module_tensors(spec, model)
