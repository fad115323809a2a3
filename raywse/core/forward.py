"""What a spec computes: its layers applied to a batch (:func:`forward`), and plain ``torch.nn`` modules of it."""

from __future__ import annotations

import collections
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from raywse.core.spec import (
    ATTENTION_PROJECTIONS,
    EMBEDDING_TABLES,
    PATCH_PARAMS,
    RECURRENT_PARAMS,
    REVERSE,
    ArchSpec,
    Layer,
    SpecError,
    through_layers,
)

_CONV = {1: F.conv1d, 2: F.conv2d}


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply a named activation."""
    if name == "none":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.01)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    raise SpecError(f"cannot evaluate activation {name!r}")


def apply_layer(
    layer: Layer, tensors: Mapping[str, torch.Tensor], x: torch.Tensor, finished: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Apply one layer (and its activation) to ``x``; an ``add`` reads ``finished[layer.source]``, the output of an
    earlier linear/conv layer after its followers (projected when the add has a ``name``)."""
    if layer.kind == "linear":
        w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
        x = F.linear(x, w, b) if x.dim() == 2 else F.linear(x.transpose(1, 2), w, b).transpose(1, 2)
    elif layer.kind == "embedding":
        words, positions, types = (tensors[f"{layer.name}.{t}.weight"] for t in EMBEDDING_TABLES)
        x = (words[x.long()] + positions[: x.shape[1]] + types[0]).transpose(1, 2)
    elif layer.kind == "patch_embedding":
        w, b, cls, table = (tensors[f"{layer.name}.{p}"] for p in PATCH_PARAMS)
        x = F.conv2d(x, w, b, stride=layer.stride).flatten(2)
        x = torch.cat([cls[None, :, None].expand(len(x), -1, 1), x], dim=2) + table.T
    elif layer.kind == "attention":
        x = attention_projections(layer, tensors, x)[2]
    elif layer.kind == "layernorm":
        w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
        x = F.layer_norm(x.transpose(1, -1), w.shape, w, b, layer.eps).transpose(1, -1)
    elif layer.kind == "groupnorm":
        w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
        x = F.group_norm(x, layer.groups, w, b, layer.eps)
    elif layer.kind == "first_step":
        x = x[:, :, 0]
    elif layer.kind == "to_sequence":
        x = x.flatten(2)
    elif layer.kind in ("conv1d", "conv2d"):
        w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
        x = _CONV[w.dim() - 2](x, w, b, stride=layer.stride, padding=layer.padding)
    elif layer.kind in RECURRENT_STATES:
        x = recurrent_states(layer, tensors, x)[0]
    elif layer.kind == "magnitude":
        half = x.shape[1] // 2
        x = torch.sqrt(x[:, :half].square() + x[:, half:].square())
    elif layer.kind == "batchnorm":
        p = {k: tensors[f"{layer.name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
        x = F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], False, 0.0, layer.eps)
    elif layer.kind == "prelu":
        x = F.prelu(x, tensors[f"{layer.name}.weight"])
    elif layer.kind == "add":
        if layer.source not in finished:
            raise SpecError(f"add reads {layer.source!r}, which is not an earlier node layer")
        skip = finished[layer.source]
        if layer.name:
            w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
            skip = _CONV[w.dim() - 2](skip, w, b, stride=layer.stride) if w.dim() > 2 else F.linear(skip, w, b)
        x = x + skip
    elif layer.kind == "flatten":
        x = x.flatten(1)
    elif layer.kind == "global_avg_pool":
        x = x.mean(dim=tuple(range(2, x.dim())))
    elif layer.kind == "max_pool2d":
        x = F.max_pool2d(x, layer.kernel_size)
    elif layer.kind == "avg_pool2d":
        x = F.avg_pool2d(x, layer.kernel_size)
    return activate(x, layer.activation)


def lstm_states(
    x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """An LSTM cell run over a sequence from a zero state, as ``nn.LSTMCell`` step by step.

    Shapes:
        ``x [B, C, L]`` (or ``[B, C]``: one step) → ``(h [B, H, L], gates [B, 4H, L])``: the hidden states and the
        gates after their nonlinearities (input, forget, cell, output), without ``L`` for a one-step input.
    """
    steps = x.unsqueeze(-1) if x.dim() == 2 else x
    hidden = weight_hh.shape[1]
    pre = torch.einsum("bcl,gc->blg", steps, weight_ih) + (bias_ih + bias_hh)
    h = c = steps.new_zeros(len(steps), hidden)
    states, gates = [], []
    for t in range(steps.shape[2]):
        i, f, g, o = (pre[:, t] + h @ weight_hh.T).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        states.append(h)
        gates.append(torch.cat([i, f, g, o], dim=1))
    h_seq, gate_seq = torch.stack(states, dim=-1), torch.stack(gates, dim=-1)
    return (h_seq[..., 0], gate_seq[..., 0]) if x.dim() == 2 else (h_seq, gate_seq)


def gru_states(
    x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: torch.Tensor, bias_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A GRU cell run over a sequence from a zero state, as ``nn.GRUCell`` step by step:
    ``r = σ(W_ir x + b_ir + W_hr h + b_hr)``, ``z = σ(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * m)`` with ``m = W_hn h + b_hn``, ``h' = (1 - z) * n + z * h``.

    Shapes:
        ``x [B, C, L]`` (or ``[B, C]``: one step) → ``(h [B, H, L], nodes [B, 4H, L])``: the hidden states and the
        values of ``r``, ``z``, ``m`` and ``n`` (the graph's node sets before the hidden state), without ``L`` for a
        one-step input.
    """
    steps = x.unsqueeze(-1) if x.dim() == 2 else x
    hidden = weight_hh.shape[1]
    pre = torch.einsum("bcl,gc->blg", steps, weight_ih) + bias_ih
    h = steps.new_zeros(len(steps), hidden)
    states, nodes = [], []
    for t in range(steps.shape[2]):
        (ir, iz, i_n), (hr, hz, m) = pre[:, t].chunk(3, dim=1), (h @ weight_hh.T + bias_hh).chunk(3, dim=1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(i_n + r * m)
        h = (1 - z) * n + z * h
        states.append(h)
        nodes.append(torch.cat([r, z, m, n], dim=1))
    h_seq, node_seq = torch.stack(states, dim=-1), torch.stack(nodes, dim=-1)
    return (h_seq[..., 0], node_seq[..., 0]) if x.dim() == 2 else (h_seq, node_seq)


#: The state function of each recurrent kind: ``(x, *RECURRENT_PARAMS tensors) -> (h, the other node sets' values)``.
RECURRENT_STATES = {"lstm": lstm_states, "gru": gru_states}


def recurrent_states(
    layer: Layer, tensors: Mapping[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, the other node sets' values)`` of an ``lstm`` / ``gru`` layer; a bidirectional one runs a second cell
    over the reversed sequence and concatenates each (forward direction first, as ``nn.LSTM`` does), positions
    aligned."""
    run = RECURRENT_STATES[layer.kind]
    h, other = run(x, *(tensors[f"{layer.name}.{p}"] for p in RECURRENT_PARAMS))
    if not layer.bidirectional:
        return h, other
    steps = x if x.dim() == 3 else x.unsqueeze(-1)
    h_rev, other_rev = (t.flip(-1) for t in run(steps.flip(-1), *(tensors[f"{layer.name}.{p}{REVERSE}"] for p in
                                                                   RECURRENT_PARAMS)))  # fmt: skip
    if x.dim() == 2:
        h_rev, other_rev = h_rev[..., 0], other_rev[..., 0]
    return torch.cat([h, h_rev], dim=1), torch.cat([other, other_rev], dim=1)


def attention_projections(
    layer: Layer, tensors: Mapping[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multi-head scaled dot-product self-attention of the ``attention`` layer ``layer`` over the positions of
    ``x [B, C, L]`` (each position attends to itself and the earlier ones when the layer is ``causal``).

    Returns ``(queries [B, Cq, L], keys [B, Cq, L], attended values [B, Cv, L])``; head ``h`` owns rows
    ``h·Cq/heads …`` of the queries and keys and ``h·Cv/heads …`` of the values, as in ``nn.MultiheadAttention``.
    """
    tokens = x.transpose(1, 2)
    projected = [F.linear(tokens, tensors[f"{layer.name}.{p}.weight"], tensors[f"{layer.name}.{p}.bias"])
                 for p in ATTENTION_PROJECTIONS]  # fmt: skip
    q, k, v = projected  # [B, L, C*]
    split = lambda t: t.unflatten(-1, (layer.heads, -1)).transpose(1, 2)  # noqa: E731  [B, heads, L, d]
    attended = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=layer.causal)
    return q.transpose(1, 2), k.transpose(1, 2), attended.transpose(1, 2).flatten(2).transpose(1, 2)


def forward(spec: ArchSpec, tensors: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Evaluate the network described by ``spec`` and ``tensors`` on a batch ``x`` of shape ``(n, *input_shape)``."""
    last = collections.deque(through_layers(spec, x, lambda ly, h, done: apply_layer(ly, tensors, h, done)), maxlen=1)
    return last[0] if last else x


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(2, x.dim())))


_ACT_MODULES = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
}


def spec_module(spec: ArchSpec, tensors: Mapping[str, torch.Tensor]) -> nn.Sequential:
    """A plain ``nn.Sequential`` computing the same function as ``spec`` with a copy of ``tensors``.

    Batch norm is refused (fold it first with :func:`raywse.graph.neural_graph.fold_batchnorm`).
    """
    mods: list[nn.Module] = []
    for layer in spec.layers:
        if layer.kind == "linear":
            w = tensors[f"{layer.name}.weight"]
            mod: nn.Module = nn.Linear(w.shape[1], w.shape[0])
        elif layer.kind == "conv2d":
            w = tensors[f"{layer.name}.weight"]
            mod = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=layer.stride, padding=layer.padding)
        elif layer.kind == "global_avg_pool":
            mod = _GlobalAvgPool()
        elif layer.kind == "flatten":
            mod = nn.Flatten()
        elif layer.kind == "max_pool2d":
            mod = nn.MaxPool2d(layer.kernel_size)
        elif layer.kind == "avg_pool2d":
            mod = nn.AvgPool2d(layer.kernel_size)
        elif layer.kind == "prelu":
            mod = nn.PReLU(len(tensors[f"{layer.name}.weight"]))
        else:
            raise SpecError(f"spec_module does not build {layer.kind} layers (fold batch norm first; no residuals)")
        if layer.parametric:
            with torch.no_grad():
                mod.weight.copy_(tensors[f"{layer.name}.weight"])
                if layer.kind != "prelu":
                    mod.bias.copy_(tensors[f"{layer.name}.bias"])
        mods.append(mod)
        if layer.activation != "none":
            mods.append(_ACT_MODULES[layer.activation]())
    return nn.Sequential(*mods)


def module_tensors(spec: ArchSpec, module: nn.Sequential) -> dict[str, torch.Tensor]:
    """Inverse of :func:`spec_module`: the module's parameters under the spec's tensor names."""
    params = [p.detach().clone() for p in module.parameters()]
    return dict(zip(spec.tensor_names(), params, strict=True))
