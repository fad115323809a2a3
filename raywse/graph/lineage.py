"""The first-layer sketch: a training-free fingerprint of a network's initialisation that fine-tuning keeps.

A first-layer neuron reads the input nodes, which keep their identity, so its incoming weights (kernel entries at
their cell of the 3×3 kernel grid, and its bias) are a direction in a space that every network of that input space
shares. Whatever the neurons' order, scale or sign, the *set* of these directions is the same. The sketch projects the
layer's unit directions ``u_i`` on ``dim`` fixed Gaussian directions ``r_k`` (one entry per input node and kernel
cell, one for the bias; drawn per input width) and keeps

    ``s_k = mean_i [(u_i · r_k)² − Σ_c u_ic² r_kc²]``,

the random projection of the off-diagonal part of the directions' second-moment matrix ``mean_i u_i u_iᵀ``
(the diagonal, how much weight each input gets, is mostly what training on the task puts there), normalised. It is
exactly invariant to permuting, positively rescaling and flipping the sign of hidden neurons. Networks trained from
different initialisations have weakly correlated sketches; a network fine-tuned from another keeps much of its
parent's — so the sketch finds a checkpoint's relatives (``lineage`` in the evaluation), which a task embedding
cannot: a fine-tuned child does its new task.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from raywse.graph.kernels import MAX_KERNEL, kernel_cells, kernel_shape_of

#: Edges projected at once (a large first layer, e.g. an embedding table, goes in chunks of ``[chunk, K, dim]``).
EDGE_CHUNK = 1 << 12


def first_layer_sketch(batch: Batch, dim: int = 256, seed: int = 0, only: Tensor | None = None) -> Tensor:
    """``[B, dim]`` unit sketches of a batch of neural graphs of one kernel shape (mixed ones:
    :class:`~raywse.core.spec.SpecError`): zeros for a graph without a first layer reading its inputs, and for those
    that ``only``, a ``[B]`` bool mask, leaves out. The random directions come from ``seed`` and the input width.

    Shapes:
        batch: ``N`` nodes, ``E`` edges with ``[E, kh * kw]`` kernels, ``B`` graphs.
    """
    cells = kernel_cells(kernel_shape_of(batch)).to(batch.edge_index.device)
    grid = MAX_KERNEL[0] * MAX_KERNEL[1]
    src, dst = batch.edge_index
    layer, graph, num_graphs = batch.node_layer, batch.batch, int(batch.num_graphs)
    weights, bias = batch.edge_attr.float(), batch.x.view(-1).float()
    neurons = (layer == 1) if only is None else (layer == 1) & only[graph]
    first = torch.nonzero((layer[src] == 0) & neurons[dst]).view(-1)
    width_of = scatter((layer == 0).long(), graph, dim=0, dim_size=num_graphs, reduce="sum")[graph]
    projected = weights.new_zeros(len(bias), dim)  # u_i · r_k before normalising
    diagonal = torch.zeros_like(projected)  # sum_c u_ic² r_kc², before normalising
    squared = (bias.pow(2) * neurons).index_add(0, dst[first], weights[first].pow(2).sum(-1))
    for width in width_of[neurons].unique().tolist():
        directions = _directions(int(width), grid, dim, seed).to(weights.device)  # [width * grid + 1, dim]: cells, bias
        mine = first[width_of[dst[first]] == width]
        live = weights[mine].ne(0).any(0)  # kernel cells in use (a padded 1×1 kernel: the centre only)
        for start in range(0, len(mine), EDGE_CHUNK):
            e = mine[start : start + EDGE_CHUNK]
            w = weights[e][:, live]
            r = directions[batch.node_pos[src[e]].unsqueeze(1) * grid + cells[live].unsqueeze(0)]  # [e, K, dim]
            projected.index_add_(0, dst[e], torch.einsum("ek,ekd->ed", w, r))
            diagonal.index_add_(0, dst[e], torch.einsum("ek,ekd->ed", w.pow(2), r.pow(2)))
        here = neurons & (width_of == width)
        projected[here] += bias[here].unsqueeze(1) * directions[-1]
        diagonal[here] += bias[here].pow(2).unsqueeze(1) * directions[-1].pow(2)
    off_diagonal = (projected.pow(2) - diagonal) / squared.clamp_min(1e-30).unsqueeze(1)
    sketch = scatter(off_diagonal[neurons], graph[neurons], dim=0, dim_size=num_graphs, reduce="mean")
    return F.normalize(sketch, dim=1)


@functools.lru_cache(maxsize=32)
def _directions(width: int, grid: int, dim: int, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed * 1_000_003 + width * 16 + grid)
    return torch.randn(width * grid + 1, dim, generator=gen)
