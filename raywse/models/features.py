"""Feature maps shared by the encoder and its baselines: Fourier lifting, per-layer grouping and RMS, MLPs."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter


def fourier_lift(values: Tensor, freqs: Tensor) -> Tensor:
    """Lift scalars ``[...]`` to ``[..., 2F + 1]`` features: ``(v, sin(2π v B), cos(2π v B))``."""
    proj = 2 * math.pi * values.unsqueeze(-1) * freqs
    return torch.cat([values.unsqueeze(-1), proj.sin(), proj.cos()], dim=-1)


def sparse_lifted_linear(values: Tensor, freqs: Tensor, linear: nn.Linear, slots: Tensor | None = None) -> Tensor:
    """``linear(fourier_lift(padded).flatten(1))`` for ``values [M, k]`` that are mostly zero, where ``padded`` puts
    column ``c`` of ``values`` at position ``slots[c]`` of the ``P`` positions ``linear`` reads (zeros elsewhere;
    default: ``k = P``, in order) — centre-padded kernels: a linear layer's edge has one nonzero of nine — computed
    from the nonzero entries only, without building ``padded``.

    ``fourier_lift(0)`` is a constant, so each position ``p`` contributes ``W_p lift(0)`` plus, where its value is
    nonzero, ``W_p (lift(v) - lift(0))``: the same function (up to float summation order) without lifting zeros.
    """
    lifted = 2 * freqs.numel() + 1
    num_positions = linear.in_features // lifted
    slots = torch.arange(values.shape[1], device=values.device) if slots is None else slots
    weight = linear.weight.view(linear.out_features, num_positions, lifted)
    zero = fourier_lift(values.new_zeros(1), freqs)[0]
    out = (linear.bias + (weight * zero).sum((1, 2))).expand(values.shape[0], -1)
    rows, columns = torch.nonzero(values, as_tuple=True)
    order = torch.argsort(columns, stable=True)  # the nonzeros column by column: one product per column, one add
    rows, columns = rows[order], columns[order]
    delta = fourier_lift(values[rows, columns], freqs) - zero
    counts = torch.bincount(columns, minlength=values.shape[1]).tolist()
    products = [part @ weight[:, int(slots[c])].t() for c, part in enumerate(torch.split(delta, counts)) if len(part)]
    return out.index_add(0, rows, torch.cat(products)) if products else out


def layer_keys(batch: Tensor, node_layer: Tensor, num_layers: int) -> Tensor:
    """Dense id of each node's (graph, layer) group."""
    return batch * (num_layers + 1) + node_layer


def layer_rms(values: Tensor, keys: Tensor, num_keys: int) -> Tensor:
    """RMS of the nonzero entries of ``values [M, k]`` per group ``keys [M]`` (1 for empty groups)."""
    nonzero = (values != 0).to(values.dtype).sum(-1)
    sq = scatter(values.pow(2).sum(-1), keys, dim=0, dim_size=num_keys, reduce="sum")
    cnt = scatter(nonzero, keys, dim=0, dim_size=num_keys, reduce="sum")
    rms = (sq / cnt.clamp(min=1)).sqrt()
    return torch.where(rms > 0, rms, torch.ones_like(rms))


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear-SiLU stack (no activation after the last layer)."""
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        mods.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            mods += [nn.SiLU(), nn.Dropout(dropout)]
    return nn.Sequential(*mods)
