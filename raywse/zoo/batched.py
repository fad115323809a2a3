"""Batched training: many same-shaped tiny networks trained as ONE tensor program.

``M`` models of one architecture keep their parameters stacked (``[M, *shape]``). Linear layers are batched matmuls
(``baddbmm``), conv layers one grouped convolution (``groups=M`` over an input ``[B, M*Cin, H, W]``, channels-last in
memory: this CPU build's grouped convolutions and batch norm run faster so); every model draws its own minibatch
indices and has its own learning rate and weight decay (broadcast tensors). The optimizer is a hand-written Adam
over the stacked tensors, so a step costs O(#layers) kernel launches, not O(M).

:func:`train_reference` trains one model the plain way (``nn.Module`` + ``torch.optim.Adam``) on the same minibatches;
it is the semantics :func:`train_batched` must reproduce, and the baseline the bench compares against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from raywse.core.forward import activate, forward, module_tensors, spec_module
from raywse.core.spec import ATTENTION_PROJECTIONS, NODE_LAYER_KINDS, ArchSpec, Layer
from raywse.zoo.arch import normalised_biases

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def minibatch_indices(n: int, steps: int, batch_size: int, seed: int) -> torch.Tensor:
    """Per-step minibatch indices ``[steps, batch_size]`` (sampled with replacement) of one model."""
    gen = torch.Generator().manual_seed(seed + 7919)
    return torch.randint(n, (steps, batch_size), generator=gen)


_PATCH_CACHE: list[tuple[torch.Tensor, int, tuple, int, torch.Tensor]] = []


def first_layer_patches(x: torch.Tensor, input_shape: tuple[int, ...], stride: int) -> torch.Tensor:
    """3×3 patches (padding 1) of every image in ``x`` (flat ``[N, C*H*W]``): ``[N, Ho*Wo, C*9]``, ``(c, ky, kx)``
    order as a flattened conv weight; for ``[C, L]`` signals width-3 patches ``[N, Lo, C*3]``. Cached on the tensor
    (a Ray worker trains many groups of one task)."""
    for cx, version, shape, s, patches in _PATCH_CACHE:
        if cx is x and version == x._version and shape == tuple(input_shape) and s == stride:
            return patches
    if len(input_shape) == 2:  # a signal: a one-row image, a 1×3 kernel
        cols = F.unfold(x.view(len(x), input_shape[0], 1, -1), (1, 3), padding=(0, 1), stride=(1, stride))
    else:
        cols = F.unfold(x.view(len(x), *input_shape), 3, padding=1, stride=stride)  # [N, C*9, L]
    patches = cols.transpose(1, 2).contiguous()
    _PATCH_CACHE.insert(0, (x, x._version, tuple(input_shape), stride, patches))
    del _PATCH_CACHE[4:]
    return patches


class _Tanh(torch.autograd.Function):
    """``tanh`` as ``2·sigmoid(2x) − 1`` (within 2e-7 of ``torch.tanh``): on this CPU build ``torch.tanh`` costs ~10×
    a sigmoid (2.1 vs 0.2 ns per element), 13–16 % of a tanh ResNet's training step."""

    @staticmethod
    def forward(ctx, x):  # noqa: ANN001, ANN205
        y = torch.sigmoid(x * 2).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def _activate(h: torch.Tensor, name: str) -> torch.Tensor:
    """:func:`~raywse.core.forward.activate`, with the faster ``tanh`` of :class:`_Tanh`."""
    return _Tanh.apply(h) if name == "tanh" else activate(h, name)


def _out_hw(hw: tuple[int, ...], stride: int) -> tuple[int, ...]:
    return tuple((d - 1) // stride + 1 for d in hw)


class _FirstConv(torch.autograd.Function):
    """The first 3×3 (or width-3 1-D) conv of ``M`` models as one ``bmm`` over precomputed patch columns
    ``[M, B*L, Cin*k]`` (the input needs no gradient), with the ReLU fused: ``[M, B*L, Cout]``."""

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


def _fast_forward(
    spec: ArchSpec, params: dict[str, torch.Tensor], first: torch.Tensor, m: int, b: int, bn: str = "batch"
) -> torch.Tensor:
    """Forward ``M`` stacked models. ``first`` is the network input: for a CNN the first layer's patch columns,
    ``[M, B*L, K]`` per model or ``[B*L, K]`` shared by all models; for an MLP ``[M, B, d]`` or ``[B, d]``. The first
    conv is a ``bmm`` (or one matmul for shared inputs), later convs one grouped conv over ``[B, M*C, H, W]`` (2-D maps
    channels-last, read by pooling and ``to_sequence`` through channels-last views, so gradients keep that layout), a
    residual projection a grouped 1×1 conv; after a ``to_sequence`` the features are tokens ``[M, B, L, C]``
    (attention, per-position linear layers and layer norms batched over the models). Batch norm normalises with the
    batch's statistics (``bn="batch"``, training), or the stored running ones (``bn="running"``); ``bn="measure"``
    normalises with the batch's and writes them into ``params`` as the running statistics. Returns logits
    ``[M, B, C]``."""
    h = first
    hw = tuple(spec.input_shape[1:])
    finished: dict[str, torch.Tensor] = {}  # what each node layer hands on (residual adds read it)
    current = ""
    tokens = False  # after a to_sequence: h is [M, B, L, C]
    for i, layer in enumerate(spec.layers):
        if layer.kind == "attention" and not tokens:  # a 1-D conv stem's [B, M*C, L]: its positions are tokens
            h, tokens = h.view(b, m, -1, h.shape[-1]).permute(1, 0, 3, 2), True
        if layer.kind in NODE_LAYER_KINDS:
            if current:
                finished[current] = h
            current = layer.name
        if layer.kind in ("conv1d", "conv2d"):
            w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            if layer.padding != 1 or w.shape[3:] != (3,) * (w.dim() - 3):  # [M, C_out, C_in, kernel]
                raise ValueError("batched training supports 3(x3) convs with padding 1 only")
            hw = _out_hw(hw, layer.stride)
            relu = layer.activation == "relu"
            if i == 0:
                cout = w.shape[1]
                if h.dim() == 2:  # one input for all models: one matmul [B*L, K] @ [K, M*C]
                    h = torch.addmm(bias.reshape(1, -1), h, w.reshape(m * cout, -1).T)
                    h = (h.clamp_(min=0) if relu else h).view(b, *hw, m, cout)
                else:
                    h = _FirstConv.apply(h, w, bias, relu).view(m, b, *hw, cout).movedim(0, -2)  # [B, *hw, M, C]
                # [B, M*C, *hw], at most one copy: a 2-D map channels-last in memory, a 1-D one channels-first
                if len(hw) == 2:
                    h = h.reshape(b, *hw, m * cout).movedim(-1, 1)
                else:
                    h = h.movedim(1, -1).reshape(b, m * cout, *hw)
            else:
                conv = F.conv2d if layer.kind == "conv2d" else F.conv1d
                h = conv(h, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), stride=layer.stride, padding=1, groups=m)
                h = F.relu(h) if relu else h
            if not relu:
                h = _activate(h, layer.activation)
            continue
        if layer.kind == "global_avg_pool":
            # channels last: the mean's gradient keeps the map's memory layout (a mixed one slows the next backward)
            h = h.mean(dim=2) if tokens else h.movedim(1, -1).mean(dim=(1, 2)).view(b, m, -1).transpose(0, 1)
            tokens = False
        elif layer.kind == "linear":
            w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            if h.dim() == 2:
                h = torch.addmm(bias.view(1, -1), h, w.reshape(-1, w.shape[-1]).T).view(b, m, -1).transpose(0, 1)
            elif tokens:  # [M, B, L, C]: every position
                h = torch.baddbmm(bias.unsqueeze(1), h.flatten(1, 2), w.transpose(1, 2)).view(*h.shape[:3], -1)
            else:
                h = torch.baddbmm(bias.unsqueeze(1), h, w.transpose(1, 2))
        elif layer.kind == "flatten" and tokens:  # [M, B, L, C] -> [M, B, C*L], channel-major as torch.flatten
            h, tokens = h.transpose(2, 3).flatten(2), False
        elif layer.kind == "to_sequence":  # [B, M*C, H, W] (channels last) -> [M, B, H*W, C], a view
            h, tokens = h.movedim(1, -1).reshape(b, h.shape[2] * h.shape[3], m, -1).permute(2, 0, 1, 3), True
        elif layer.kind == "attention":
            h = _attention(layer, params, h)
        elif layer.kind == "layernorm":
            w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
            h = torch.addcmul(bias.view(m, 1, 1, -1), F.layer_norm(h, h.shape[-1:], eps=layer.eps), w.view(m, 1, 1, -1))
        elif layer.kind == "batchnorm":
            h = _batch_norm(layer, params, h, bn)
        elif layer.kind == "add":
            skip = finished[layer.source]
            if layer.name:
                w, bias = params[f"{layer.name}.weight"], params[f"{layer.name}.bias"]
                skip = F.conv2d(skip, w.reshape(-1, *w.shape[2:]), bias.reshape(-1), stride=layer.stride, groups=m)
            h = h + skip
        else:
            raise ValueError(f"batched training does not support layer kind {layer.kind}")
        h = _activate(h, layer.activation)
    return h


def _attention(layer: Layer, params: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    """Multi-head self-attention of ``M`` stacked models over tokens ``[M, B, L, C]`` (each model its own weights):
    one product for the three projections (the score scale folded into the query's weights), then two batched
    products over ``[M·B·heads, L, d]`` (written out: the CPU fallback of ``scaled_dot_product_attention`` spends
    most of a step on NaN guards around its softmax)."""
    if layer.causal:
        raise ValueError("batched training does not support causal attention")
    m, b, length, width = h.shape
    heads, d = layer.heads, width // layer.heads
    wq, wk, wv = (params[f"{layer.name}.{p}.weight"] for p in ATTENTION_PROJECTIONS)
    bq, bk, bv = (params[f"{layer.name}.{p}.bias"] for p in ATTENTION_PROJECTIONS)
    weight, bias = torch.cat([wq * d**-0.5, wk, wv], 1), torch.cat([bq * d**-0.5, bk, bv], 1)  # [M, 3C, C], [M, 3C]
    qkv = torch.baddbmm(bias.unsqueeze(1), h.flatten(1, 2), weight.transpose(1, 2))  # [M, B*L, 3C]
    q, k, v = qkv.view(m, b, length, 3, heads, d).permute(3, 0, 1, 4, 2, 5).reshape(3, m * b * heads, length, d)
    weights = _softmax(torch.bmm(q, k.transpose(1, 2)))
    return torch.bmm(weights, v).view(m, b, heads, length, d).transpose(2, 3).reshape(m, b, length, width)


def _batch_norm(layer: Layer, params: dict[str, torch.Tensor], h: torch.Tensor, bn: str) -> torch.Tensor:
    """Batch norm of ``[B, M*C, H, W]`` conv features, per model and channel (see :func:`_fast_forward`)."""
    p = {k: params.get(f"{layer.name}.{k}") for k in ("weight", "bias", "running_mean", "running_var")}
    if bn == "measure":
        p["running_mean"].copy_(h.mean(dim=(0, 2, 3)).view_as(p["running_mean"]))
        p["running_var"].copy_(h.var(dim=(0, 2, 3), unbiased=False).view_as(p["running_var"]))
    training = bn == "batch"
    mean, var = (None, None) if training else (p["running_mean"].reshape(-1), p["running_var"].reshape(-1))
    return F.batch_norm(h, mean, var, p["weight"].reshape(-1), p["bias"].reshape(-1), training, 0.0, layer.eps)


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension. This CPU build's ``torch.softmax`` runs 5x slower than the written-out form
    on rows shorter than 16 (the 10 positions of an MNIST-1D transformer), 2x faster on rows of 16 or more."""
    if scores.shape[-1] >= 16:
        return torch.softmax(scores, dim=-1)
    e = (scores - scores.amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


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
    dataset (:func:`first_layer_patches`). Batch norm trains on minibatch statistics; at each snapshot its running
    statistics are measured on the model's last 512 training samples (:func:`_measure_batch_norm`); the biases it
    follows stay at zero (:func:`~raywse.zoo.arch.normalised_biases`; ``init`` must hold zeros there).
    """
    stats = [k for k in spec.tensor_names() if k.endswith(("running_mean", "running_var"))]
    names = [k for k in spec.tensor_names() if k not in stats]
    frozen = [names.index(k) for k in normalised_biases(spec)]
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
    is_cnn = spec.layers[0].kind in ("conv1d", "conv2d")
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
            for i in frozen:  # zero gradients, zero weights: Adam leaves them at 0
                grads[i].zero_()
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
            snapshot = {k: p.detach().clone() for k, p in zip(names, params, strict=True)}
            if stats:
                snapshot |= {k: init[k].clone() for k in stats}
                _measure_batch_norm(spec, snapshot, source, indices[: t + 1])
            snapshots.append(snapshot)
    return snapshots


@torch.no_grad()
def _measure_batch_norm(
    spec: ArchSpec, params: dict[str, torch.Tensor], source: torch.Tensor, indices: torch.Tensor, samples: int = 512
) -> None:
    """Set every batch norm's running statistics of the stacked models to those of their features on the last
    ``samples`` training samples each model drew (its own task's inputs), layer by layer."""
    steps, m, b = indices.shape
    rows = indices[-math.ceil(samples / b) :].permute(1, 0, 2).reshape(m, -1)[:, -samples:]
    first = source[rows].view(m, -1, source.shape[-1])
    _fast_forward(spec, params, first, m, rows.shape[1], bn="measure")


@torch.no_grad()
def batched_accuracy(spec: ArchSpec, params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Accuracy of every stacked model on ``(x, y)`` (evaluated in sample chunks to bound memory)."""
    m = next(iter(params.values())).shape[0]
    is_cnn = spec.layers[0].kind in ("conv1d", "conv2d")
    source = first_layer_patches(x, spec.input_shape, spec.layers[0].stride) if is_cnn else x
    correct = torch.zeros(m, dtype=torch.int64)
    chunk = 256
    for start in range(0, len(x), chunk):
        xb = source[start : start + chunk]
        logits = _fast_forward(spec, params, xb.reshape(-1, xb.shape[-1]), m, len(xb), bn="running")
        correct += (logits.argmax(-1) == y[start : start + chunk]).sum(-1)
    return (correct.double() / len(x)).tolist()


@torch.no_grad()
def model_accuracy(spec: ArchSpec, tensors: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of one model through the reference :func:`raywse.core.forward.forward` (what a checkpoint computes)."""
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
