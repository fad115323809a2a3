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

from raywse.core.spec import ArchSpec, Layer, activate, forward, module_tensors, spec_module

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


_PATCH_CACHE: list[tuple[torch.Tensor, int, tuple, int, torch.Tensor]] = []


def first_layer_patches(x: torch.Tensor, input_shape: tuple[int, ...], stride: int) -> torch.Tensor:
    """3×3 patches (padding 1) of every image in ``x`` (flat ``[N, C*H*W]``): ``[N, Ho*Wo, C*9]``, ``(c, ky, kx)``
    order as a flattened conv weight. Cached on the tensor (a Ray worker trains many groups of one task)."""
    for cx, version, shape, s, patches in _PATCH_CACHE:
        if cx is x and version == x._version and shape == tuple(input_shape) and s == stride:
            return patches
    cols = F.unfold(x.view(len(x), *input_shape), 3, padding=1, stride=stride)  # [N, C*9, L]
    patches = cols.transpose(1, 2).contiguous()
    _PATCH_CACHE.insert(0, (x, x._version, tuple(input_shape), stride, patches))
    del _PATCH_CACHE[4:]
    return patches


def _out_hw(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    return (hw[0] - 1) // stride + 1, (hw[1] - 1) // stride + 1


class _FirstConv(torch.autograd.Function):
    """The first 3×3 conv of ``M`` models as one ``bmm`` over precomputed patch columns ``[M, B*L, Cin*9]`` (the
    input needs no gradient), with the ReLU fused: ``[M, B*L, Cout]``."""

    @staticmethod
    def forward(ctx, cols, weight, bias, relu):  # noqa: ANN001, ANN205
        m, cout = weight.shape[:2]
        w2 = weight.reshape(m, cout, -1)
        out = torch.baddbmm(bias.unsqueeze(1), cols, w2.transpose(1, 2))
        if relu:
            out.clamp_(min=0)
        ctx.save_for_backward(cols, weight, out)
        ctx.relu = relu
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        cols, weight, out = ctx.saved_tensors
        if ctx.relu:
            grad = torch.ops.aten.threshold_backward(grad, out, 0)
        gw = torch.bmm(grad.transpose(1, 2), cols).view_as(weight)
        return None, gw, grad.sum(1), None


def _fast_forward(spec: ArchSpec, params: dict[str, torch.Tensor], first: torch.Tensor, m: int, b: int) -> torch.Tensor:
    """Forward ``M`` stacked models. ``first`` is the network input: for a CNN the first layer's patch columns,
    ``[M, B*L, K]`` per model or ``[B*L, K]`` shared by all models; for an MLP ``[M, B, d]`` or ``[B, d]``. The first
    conv is a ``bmm`` (or one matmul for shared inputs), later convs one grouped conv over ``[B, M*C, H, W]``.
    Returns logits ``[M, B, C]``."""
    h = first
    hw = tuple(spec.input_shape[1:])
    for i, layer in enumerate(spec.layers):
        if layer.kind == "conv2d":
            w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            if layer.padding != 1 or w.shape[-2:] != (3, 3):
                raise ValueError("batched training supports 3x3 convs with padding 1 only")
            hw = _out_hw(hw, layer.stride)
            relu = layer.activation == "relu"
            if i == 0:
                cout = w.shape[1]
                if h.dim() == 2:  # one input for all models: one matmul [B*L, K] @ [K, M*C]
                    h = torch.addmm(bias.reshape(1, -1), h, w.reshape(m * cout, -1).T)
                    h = (h.clamp_(min=0) if relu else h).view(b, *hw, m * cout).permute(0, 3, 1, 2).contiguous()
                else:
                    h = _FirstConv.apply(h, w, bias, relu)  # [M, B*L, C]
                    h = h.view(m, b, *hw, cout).permute(1, 0, 4, 2, 3).reshape(b, m * cout, *hw)
            else:
                h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), stride=layer.stride, padding=1, groups=m)
                h = F.relu(h) if relu else h
            if not relu:
                h = activate(h, layer.activation)
            continue
        if layer.kind == "global_avg_pool":
            h = h.mean(dim=(2, 3)).view(b, m, -1).transpose(0, 1)
        elif layer.kind == "linear":
            w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            if h.dim() == 2:
                h = torch.addmm(bias.view(1, -1), h, w.reshape(-1, w.shape[-1]).T).view(b, m, -1).transpose(0, 1)
            else:
                h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
        else:
            raise ValueError(f"batched training does not support layer kind {layer.kind}")
        h = activate(h, layer.activation)
    return h


def train_batched(
    spec: ArchSpec,
    init: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
    snapshot_steps: tuple[int, ...] = (),
) -> list[dict[str, torch.Tensor]]:
    """Train ``M`` models with Adam (L2 weight decay as ``torch.optim.Adam``) on per-model minibatches; returns the
    stacked parameters after each of ``snapshot_steps`` (ascending, the last one ``steps``; default: only the end).

    ``init``: stacked parameters ``[M, ...]``; ``x``: flat inputs ``[N, d]``; ``y``: labels ``[N]`` shared by all
    models or ``[M, N]`` per model (models of different label maps in one program); ``indices``: ``[steps, M, B]``;
    ``lr``/``weight_decay``: ``[M]``.

    All parameters of a model live in one flat row of ``flat [M, P]`` (the per-layer tensors are views), so the
    Adam update is one fused kernel over ``[M, P]`` (``torch._fused_adam_`` with lr 1 computes the update
    direction; the per-model learning rate scales it). A CNN's first layer reads 3×3 patches computed once per
    dataset (:func:`first_layer_patches`).
    """
    names = spec.tensor_names()
    steps, m, b = indices.shape
    snapshot_steps = snapshot_steps or (steps,)
    if list(snapshot_steps) != sorted(set(snapshot_steps)) or snapshot_steps[-1] != steps or snapshot_steps[0] < 1:
        raise ValueError(f"snapshot_steps must ascend from >= 1 to {steps}, got {snapshot_steps}")
    sizes = [init[k][0].numel() for k in names]
    flat = torch.cat([init[k].reshape(m, -1) for k in names], 1).contiguous()
    params, offset = [], 0
    for k, size in zip(names, sizes, strict=True):
        params.append(flat[:, offset : offset + size].view(init[k].shape).requires_grad_(True))
        offset += size
    exp_avg, exp_avg_sq, update = torch.zeros_like(flat), torch.zeros_like(flat), torch.zeros_like(flat)
    step = torch.zeros((), dtype=torch.float32)
    lr_col, wd_col = lr.view(m, 1).to(flat.dtype), weight_decay.view(m, 1).to(flat.dtype)
    use_wd = bool((weight_decay != 0).any())
    is_cnn = spec.layers[0].kind == "conv2d"
    source = first_layer_patches(x, spec.input_shape, spec.layers[0].stride) if is_cnn else x
    named = dict(zip(names, params, strict=True))
    snapshots = []
    for t in range(steps):
        idx = indices[t]
        first = source[idx].view(m, -1, source.shape[-1])
        logits = _fast_forward(spec, named, first, m, b)
        labels = y[idx] if y.dim() == 1 else y.gather(1, idx)
        loss = F.cross_entropy(logits.reshape(m * b, -1), labels.reshape(-1), reduction="sum") / b
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            grad = torch.cat([g.reshape(m, -1) for g in grads], 1)
            if use_wd:
                grad.addcmul_(flat, wd_col)
            update.zero_()
            step += 1  # the fused kernel reads the step count; torch.optim increments it before the call
            torch._fused_adam_(
                [update], [grad], [exp_avg], [exp_avg_sq], [], [step],
                lr=1.0, beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], weight_decay=0.0, eps=ADAM_EPS,
                amsgrad=False, maximize=False,
            )  # fmt: skip
            flat.addcmul_(update, lr_col)
        if t + 1 in snapshot_steps:
            snapshots.append({k: p.detach().clone() for k, p in zip(names, params, strict=True)})
    return snapshots


@torch.no_grad()
def batched_accuracy(spec: ArchSpec, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy of every stacked model on ``(x, y)`` (evaluated in sample chunks to bound memory)."""
    m = next(iter(params.values())).shape[0]
    is_cnn = spec.layers[0].kind == "conv2d"
    source = first_layer_patches(x, spec.input_shape, spec.layers[0].stride) if is_cnn else x
    correct = torch.zeros(m, dtype=torch.int64)
    chunk = 256
    for start in range(0, len(x), chunk):
        xb = source[start : start + chunk]
        logits = _fast_forward(spec, params, xb.reshape(-1, xb.shape[-1]), m, len(xb))
        correct += (logits.argmax(-1) == y[start : start + chunk]).sum(-1)
    return (correct.double() / len(x)).tolist()


@torch.no_grad()
def model_accuracy(spec: ArchSpec, tensors: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of one model through the reference :func:`raywse.core.spec.forward` (what a checkpoint computes)."""
    pred = forward(spec, tensors, x.reshape(-1, *spec.input_shape)).argmax(-1)
    return int((pred == y).sum()) / len(y)


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
