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
