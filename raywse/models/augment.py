"""Positive views of neural graphs for contrastive training, applied directly to a ``Data`` graph.

All functions take an explicit ``torch.Generator`` and return a new graph (the input is never modified).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import scatter

from raywse.models.encoder import HOMOGENEOUS_ACT_IDS


def _layer_std(values: Tensor, layer: Tensor) -> Tensor:
    """Std of the nonzero entries of ``values [M, k]`` grouped by ``layer [M]``, gathered back per row."""
    mask = values != 0
    size = int(layer.max()) + 1
    cnt = scatter(mask.sum(-1).float(), layer, dim=0, dim_size=size, reduce="sum").clamp(min=1)
    mean = scatter(values.sum(-1), layer, dim=0, dim_size=size, reduce="sum") / cnt
    var = scatter(((values - mean[layer].unsqueeze(-1)) * mask).pow(2).sum(-1), layer, dim=0, dim_size=size) / cnt
    return var.sqrt()[layer]


def add_weight_noise(data: Data, generator: torch.Generator, sigma: float) -> Data:
    """Gaussian noise on weights and biases, scaled per layer by ``sigma`` times that layer's std.

    Zero kernel entries (padding of smaller kernels) stay zero; input-node biases stay zero.
    """
    out = data.clone()
    edge_layer = data.node_layer[data.edge_index[1]]
    w_std = _layer_std(data.edge_attr, edge_layer).unsqueeze(-1)
    noise = torch.randn(data.edge_attr.shape, generator=generator) * sigma * w_std
    out.edge_attr = data.edge_attr + noise * (data.edge_attr != 0)
    b_std = _layer_std(data.x, data.node_layer)
    b_noise = torch.randn(data.x.shape[0], generator=generator) * sigma * b_std * (data.node_kind != 0)
    out.x = data.x + b_noise.unsqueeze(-1)
    return out


def drop_edges(data: Data, generator: torch.Generator, p: float) -> Data:
    """Remove each edge (zero its weight) independently with probability ``p``."""
    keep = torch.rand(data.edge_index.shape[1], generator=generator) >= p
    out = data.clone()
    out.edge_index, out.edge_attr = data.edge_index[:, keep], data.edge_attr[keep]
    return out


def rescale_hidden_graph(data: Data, generator: torch.Generator, max_log_scale: float = math.log(2.0)) -> Data:
    """Function-preserving per-neuron rescaling of hidden nodes with positively homogeneous activations.

    Each such node gets ``s = exp(U(-max_log_scale, max_log_scale))``: incoming weights and bias times ``s``,
    outgoing weights times ``1/s``. Other nodes keep ``s = 1``.
    """
    homogeneous = torch.isin(data.node_act, data.node_act.new_tensor(HOMOGENEOUS_ACT_IDS))
    scalable = (data.node_kind == 1) & homogeneous
    u = torch.rand(data.num_nodes, generator=generator) * 2 - 1
    s = torch.where(scalable, (u * max_log_scale).exp(), torch.ones_like(u))
    src, dst = data.edge_index
    out = data.clone()
    out.edge_attr = data.edge_attr * (s[dst] / s[src]).unsqueeze(-1)
    out.x = data.x * s.unsqueeze(-1)
    return out


def permute_graph_nodes(data: Data, generator: torch.Generator) -> Data:
    """Shuffle the order of hidden nodes within each layer and the order of edges (same function, same graph).

    Input and output nodes keep their places, so the result still satisfies the layer-by-layer node order of the
    contract; only a model reading hidden node order can tell the two graphs apart.
    """
    n = data.num_nodes
    new_order = torch.arange(n)
    hidden = data.node_kind == 1
    for layer in data.node_layer[hidden].unique().tolist():
        idx = torch.nonzero(hidden & (data.node_layer == layer)).view(-1)
        new_order[idx] = idx[torch.randperm(idx.numel(), generator=generator)]
    # new_order[k] = old node placed at position k; old→new relabelling is its inverse
    relabel = torch.empty_like(new_order)
    relabel[new_order] = torch.arange(n)
    edge_perm = torch.randperm(data.edge_index.shape[1], generator=generator)
    out = data.clone()
    for key in ("x", "node_layer", "node_kind", "node_pos", "node_act", "node_type"):
        out[key] = data[key][new_order]
    out.edge_index = relabel[data.edge_index[:, edge_perm]]
    out.edge_attr = data.edge_attr[edge_perm]
    return out


def make_view(
    data: Data,
    generator: torch.Generator,
    noise: float = 0.05,
    edge_drop: float = 0.1,
    rescale: bool = True,
    permute: bool = False,
) -> Data:
    """A positive view: optional rescaling and node permutation (exact symmetries), then noise and edge dropout."""
    view = data
    if rescale:
        view = rescale_hidden_graph(view, generator)
    if permute:
        view = permute_graph_nodes(view, generator)
    if noise > 0:
        view = add_weight_noise(view, generator, noise)
    if edge_drop > 0:
        view = drop_edges(view, generator, edge_drop)
    return view
