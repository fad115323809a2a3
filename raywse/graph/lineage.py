"""What a network's first layer tells of it, whatever the order, scale or sign of its hidden neurons.

A first-layer neuron reads the input nodes, which keep their identity, so its incoming weights (kernel entries at
their cell of the 3×3 kernel grid, and its bias) are a direction in a space that every network of that input space
shares; the *set* of these unit directions ``u_i`` is exactly invariant to permuting, positively rescaling and
sign-flipping hidden neurons. Both sketches below project it on fixed Gaussian directions ``r_k`` (one entry per input
node and kernel cell, one for the bias; drawn per input width), each keeping something else:

- :func:`first_layer_sketch`, *which* directions the network has — what fine-tuning keeps of its initialisation, so
  it finds a checkpoint's relatives (lineage search, the evaluation's ``lineage``), which a task embedding cannot: a
  fine-tuned child does its new task. Random Fourier features of an even kernel,
  ``s_k = mean_i cos(σ u_i · r_k) − exp(−σ²/2)``, normalised: the inner product of two sketches estimates the mean over
  neuron pairs of ``½[exp(−σ²|u − v|²/2) + exp(−σ²|u + v|²/2)]`` (a neuron and its sign flip count alike), less what
  two sets of random directions share (``exp(−σ²/2)``, every feature's mean over random unit directions). With
  ``σ = 3`` a pair counts only when the directions nearly agree. Networks trained from different initialisations
  have near-orthogonal sketches. On session 14's demo zoo, symmetries randomised, it finds a child's relatives at
  lineage mAP 0.901 (``σ`` chosen on the train split, by finding a run's other snapshot).
- :func:`first_layer_moments` (drawn exactly as the sketch of sessions 10–14 was, so indexes built then still
  work), how the directions are *spread* — largely what training on a task puts there, so it
  is comparable across initialisations: the fingerprint of a network never run on probes (the encoder's
  ``sketch_dim``). The random projection of the off-diagonal part of the second-moment matrix ``mean_i u_i u_iᵀ``,
  ``s_k = mean_i [(u_i · r_k)² − Σ_c u_ic² r_kc²]``, normalised (the diagonal, how much weight each input gets, is
  mostly the data's). It found relatives at lineage mAP 0.818 on the same zoo, and foreign checkpoints (trained
  elsewhere, never run on probes) find same-task zoo models better with it than with the kernel sketch (P@10 0.535
  against 0.409, session 14's encoder).
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
#: Rows of random directions drawn at once (:func:`_directions`): 4 MiB at 1,024 wide.
BLOCK = 1024
#: The kernel's sharpness σ (the module docstring).
SIGMA = 3.0


def first_layer_sketch(
    batch: Batch, dim: int = 1024, seed: int = 0, only: Tensor | None = None, sigma: float = SIGMA
) -> Tensor:
    """``[B, dim]`` unit kernel sketches (the module docstring) of a batch of neural graphs of one kernel shape
    (mixed ones: :class:`~raywse.core.spec.SpecError`): zeros for a graph without a first layer reading its inputs, and
    for those that ``only``, a ``[B]`` bool mask, leaves out. The random directions come from ``seed`` and the input
    width; ``sigma`` is the kernel's sharpness.

    Shapes:
        batch: ``N`` nodes, ``E`` edges with ``[E, kh * kw]`` kernels, ``B`` graphs.
    """
    neurons, projected, _, squared = _project(batch, dim, seed, only, moments=False)
    unit = projected[neurons] / squared[neurons].clamp_min(1e-30).sqrt().unsqueeze(1)  # u_i · r_k
    features = torch.cos(sigma * unit) - math.exp(-(sigma**2) / 2)
    sketch = scatter(features, batch.batch[neurons], dim=0, dim_size=int(batch.num_graphs), reduce="mean")
    return F.normalize(sketch, dim=1)


def first_layer_moments(batch: Batch, dim: int = 256, seed: int = 0, only: Tensor | None = None) -> Tensor:
    """``[B, dim]`` unit second-moment sketches (the module docstring) of a batch of neural graphs of one kernel
    shape; arguments and shapes as :func:`first_layer_sketch`'s."""
    neurons, projected, diagonal, squared = _project(batch, dim, seed, only, moments=True)
    off_diagonal = (projected[neurons].pow(2) - diagonal[neurons]) / squared[neurons].clamp_min(1e-30).unsqueeze(1)
    sketch = scatter(off_diagonal, batch.batch[neurons], dim=0, dim_size=int(batch.num_graphs), reduce="mean")
    return F.normalize(sketch, dim=1)


def _project(
    batch: Batch, dim: int, seed: int, only: Tensor | None, moments: bool
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """``(first-layer neuron mask [N], w_i · r_k [N, dim], Σ_c w_ic² r_kc² [N, dim] or None, |w_i|² [N])`` over the
    nodes of ``batch``, ``w_i`` being a neuron's incoming weights and bias (zero rows off the mask). ``moments``: the
    diagonal too, and the random directions the moments have always been drawn with (:func:`_table`), so that an
    index built before the kernel sketch existed still meets its unprobed queries; else :func:`_directions`'."""
    cells = kernel_cells(kernel_shape_of(batch)).to(batch.edge_index.device)
    grid = MAX_KERNEL[0] * MAX_KERNEL[1]
    src, dst = batch.edge_index
    layer, graph, num_graphs = batch.node_layer, batch.batch, int(batch.num_graphs)
    weights, bias = batch.edge_attr.float(), batch.x.view(-1).float()
    neurons = (layer == 1) if only is None else (layer == 1) & only[graph]
    first = torch.nonzero((layer[src] == 0) & neurons[dst]).view(-1)
    width_of = scatter((layer == 0).long(), graph, dim=0, dim_size=num_graphs, reduce="sum")[graph]
    projected = weights.new_zeros(len(bias), dim)
    diag = torch.zeros_like(projected) if moments else None
    squared = (bias.pow(2) * neurons).index_add(0, dst[first], weights[first].pow(2).sum(-1))
    for width in width_of[neurons].unique().tolist():
        table = _table(int(width), grid, dim, seed).to(weights.device) if moments else None
        mine = first[width_of[dst[first]] == width]
        live = weights[mine].ne(0).any(0)  # kernel cells in use (a padded 1×1 kernel: the centre only)
        for start in range(0, len(mine), EDGE_CHUNK):
            e = mine[start : start + EDGE_CHUNK]
            pos, cell = batch.node_pos[src[e]].unsqueeze(1), cells[live].unsqueeze(0)
            if table is not None:  # rows input-major, then the bias: width * grid + 1 of them
                r = table[pos * grid + cell]  # [e, K, dim]
            else:  # rows cell-major, then the bias
                r = _directions(cell * width + pos, int(width), dim, seed).to(weights.device)
            w = weights[e][:, live]
            projected.index_add_(0, dst[e], torch.einsum("ek,ekd->ed", w, r))
            if diag is not None:
                diag.index_add_(0, dst[e], torch.einsum("ek,ekd->ed", w.pow(2), r.pow(2)))
        here = neurons & (width_of == width)
        bias_row = torch.tensor([grid * width])  # after every input's cells, in either layout
        r_bias = table[bias_row] if table is not None else _directions(bias_row, int(width), dim, seed)
        r_bias = r_bias.to(weights.device)
        projected[here] += bias[here].unsqueeze(1) * r_bias
        if diag is not None:
            diag[here] += bias[here].pow(2).unsqueeze(1) * r_bias.pow(2)
    return neurons, projected, diag, squared


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


@functools.lru_cache(maxsize=64)
def _direction_block(width: int, dim: int, seed: int, block: int) -> Tensor:
    gen = torch.Generator().manual_seed(((seed * 1_000_003 + width) * 4099 + block) * 8191 + dim)
    return torch.randn(BLOCK, dim, generator=gen)


@functools.lru_cache(maxsize=32)
def _table(width: int, grid: int, dim: int, seed: int) -> Tensor:
    """``[width * grid + 1, dim]``: the moments' whole table of random directions for one input width (as drawn
    since the moments were introduced, in session 10)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + width * 16 + grid)
    return torch.randn(width * grid + 1, dim, generator=gen)
