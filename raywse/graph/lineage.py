"""The first-layer sketch: a training-free fingerprint of a network's initialisation that fine-tuning keeps.

A first-layer neuron reads the input nodes, which keep their identity, so its incoming weights (kernel entries at
their cell of the 3×3 kernel grid, and its bias) are a direction in a space that every network of that input space
shares. Whatever the neurons' order, scale or sign, the *set* of these directions is the same. The sketch embeds that
set with random Fourier features of an even kernel: with fixed Gaussian directions ``r_k`` (one entry per input node
and kernel cell, one for the bias; drawn per input width) and the layer's unit directions ``u_i`` it keeps

    ``s_k = mean_i cos(σ u_i · r_k) − exp(−σ²/2)``,

normalised: the inner product of two sketches estimates the mean over neuron pairs of
``½[exp(−σ²|u − v|²/2) + exp(−σ²|u + v|²/2)]`` (a neuron and its sign flip count alike), less what two sets of random
directions share, ``exp(−σ²/2)`` being the mean of every feature over random unit directions. With ``σ = 3`` a pair of
neurons counts only when their directions nearly agree, so the sketch tells *which* directions a network has, not
just how they are spread (a second-moment sketch, the session-10 form, found relatives at lineage mAP 0.818 where
this finds them at 0.891 on session 14's demo zoo with symmetries randomised; ``σ`` was chosen on the train split,
by finding a run's other snapshot). It is exactly invariant to permuting, positively rescaling and flipping the sign
of hidden neurons. Networks trained from different initialisations have weakly correlated sketches; a network
fine-tuned from another keeps much of its parent's — so the sketch finds a checkpoint's relatives (``lineage`` in the
evaluation), which a task embedding cannot: a fine-tuned child does its new task.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from raywse.graph.kernels import MAX_KERNEL, kernel_cells, kernel_shape_of

#: Edges projected at once (a large first layer, e.g. an embedding table, goes in chunks of ``[chunk, K, dim]``).
EDGE_CHUNK = 1 << 10
#: Rows of random directions drawn at once (:func:`_directions`).
BLOCK = 4096
#: The kernel's sharpness σ (the module docstring).
SIGMA = 3.0


def first_layer_sketch(
    batch: Batch, dim: int = 1024, seed: int = 0, only: Tensor | None = None, sigma: float = SIGMA
) -> Tensor:
    """``[B, dim]`` unit sketches of a batch of neural graphs of one kernel shape (mixed ones:
    :class:`~raywse.core.spec.SpecError`): zeros for a graph without a first layer reading its inputs, and for those
    that ``only``, a ``[B]`` bool mask, leaves out. The random directions come from ``seed`` and the input width;
    ``sigma`` is the kernel's sharpness (the module docstring).

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
    projected = weights.new_zeros(len(bias), dim)  # w_i · r_k before normalising
    squared = (bias.pow(2) * neurons).index_add(0, dst[first], weights[first].pow(2).sum(-1))
    for width in width_of[neurons].unique().tolist():
        mine = first[width_of[dst[first]] == width]
        live = weights[mine].ne(0).any(0)  # kernel cells in use (a padded 1×1 kernel: the centre only)
        for start in range(0, len(mine), EDGE_CHUNK):
            e = mine[start : start + EDGE_CHUNK]
            rows = cells[live].unsqueeze(0) * width + batch.node_pos[src[e]].unsqueeze(1)  # [e, K]: cell, then input
            r = _directions(rows, int(width), dim, seed).to(weights.device)  # [e, K, dim]
            projected.index_add_(0, dst[e], torch.einsum("ek,ekd->ed", weights[e][:, live], r))
        here = neurons & (width_of == width)
        bias_row = torch.tensor([grid * width])  # after every cell of every input
        projected[here] += bias[here].unsqueeze(1) * _directions(bias_row, int(width), dim, seed).to(weights.device)
    unit = projected / squared.clamp_min(1e-30).sqrt().unsqueeze(1)  # u_i · r_k
    features = torch.cos(sigma * unit[neurons]) - math.exp(-(sigma**2) / 2)
    sketch = scatter(features, graph[neurons], dim=0, dim_size=num_graphs, reduce="mean")
    return F.normalize(sketch, dim=1)


def _directions(rows: Tensor, width: int, dim: int, seed: int) -> Tensor:
    """``rows.shape + (dim,)``: the fixed Gaussian directions of the given rows of an input width's table (row
    ``cell * width + input``, then the bias), drawn a block of :data:`BLOCK` rows at a time so that a wide input (an
    embedding table of 1×1 kernels) only ever draws the blocks of the cells it uses."""
    rows = rows.cpu()
    blocks = torch.div(rows, BLOCK, rounding_mode="floor")
    out = torch.empty(*rows.shape, dim)
    for block in blocks.unique().tolist():
        here = blocks == block
        out[here] = _direction_block(width, dim, seed, block)[rows[here] - block * BLOCK]
    return out


@functools.lru_cache(maxsize=32)
def _direction_block(width: int, dim: int, seed: int, block: int) -> Tensor:
    gen = torch.Generator().manual_seed(((seed * 1_000_003 + width) * 4099 + block) * 8191 + dim)
    return torch.randn(BLOCK, dim, generator=gen)
