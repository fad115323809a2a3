"""Weight tensors as dense blocks: the layout that lets message passing run as batched matrix products.

The edges between two node groups of a neural graph (the neurons of one layer and of the next, in one graph) are the
entries of one weight tensor: a dense ``[n_dst, n_src]`` grid. :func:`block_layout` finds these blocks in a batch
from the edges themselves — any (source group, target group) pair that has an edge is a block — and groups the blocks
of equal shape across graphs, so that a layer of :class:`~raywse.models.conv.NeuralGraphConv` is two ``bmm`` per
shape group instead of gathers and scatters over every edge (as NFN computes its layers). A node's position in its
block is its rank among its group's nodes in storage order; an absent edge (dropped by a training view) is a zero in
the grid, which sends exactly the nothing the edge-list form sends. Block sides are padded to multiples of eight
(:func:`padded_size`), so blocks of nearby shapes share one product; padding slots read and write a dummy node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: Block sides are padded to a multiple of this.
SIDE_STEP = 8


@dataclass(frozen=True)
class BlockGroup:
    """Every block of one shape ``[n_dst, n_src]`` in a batch (``G`` blocks).

    Shapes:
        ``src_nodes [G, n_src]`` and ``dst_nodes [G, n_dst]`` (node indices, by position in the block; padding slots
        hold ``N``, a dummy node);
        ``edges [E_g]`` (edge indices) and ``cells [E_g]`` (each edge's flat index in a ``[G, n_dst, n_src]`` grid).
    """

    src_nodes: Tensor
    dst_nodes: Tensor
    edges: Tensor
    cells: Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(G, n_dst, n_src)``."""
        return self.dst_nodes.shape[0], self.dst_nodes.shape[1], self.src_nodes.shape[1]


@dataclass(frozen=True)
class EdgeGrids:
    """Per-edge features ``[E, K]`` scattered into each group's grids, in the two layouts the two message
    directions multiply with: ``forward [G, n_dst, K * n_src]`` and ``backward [G, n_src, K * n_dst]``."""

    forward: list[Tensor]
    backward: list[Tensor]


def block_layout(edge_index: Tensor, node_group: Tensor, num_groups: int) -> list[BlockGroup]:
    """The blocks of a (batched) graph whose nodes are partitioned by ``node_group`` (e.g. (graph, layer) keys).

    Args:
        edge_index: ``[2, E]`` source and target node of every edge.
        node_group: ``[N]`` group id of every node, in ``[0, num_groups)``.
        num_groups: number of group ids.

    Returns:
        one :class:`BlockGroup` per distinct block shape. Each (source, target) pair must have at most one edge (a
        weight tensor has one entry per pair; neural graphs are built so).
    """
    device = edge_index.device
    sizes = torch.bincount(node_group, minlength=num_groups)
    order = torch.argsort(node_group, stable=True)
    starts = torch.cumsum(sizes, 0) - sizes
    position = torch.empty_like(node_group)
    position[order] = torch.arange(len(node_group), device=device) - starts[node_group[order]]

    src, dst = edge_index
    pair = node_group[dst] * num_groups + node_group[src]
    blocks, edge_block = torch.unique(pair, return_inverse=True)
    block_dst, block_src = blocks // num_groups, blocks % num_groups
    padded = padded_size(sizes)
    shapes, block_shape = torch.unique(
        torch.stack([padded[block_dst], padded[block_src]], dim=1), dim=0, return_inverse=True
    )
    # every block's rank among the blocks of its shape, and the edges sorted by shape: one pass, then slices
    block_order = torch.argsort(block_shape, stable=True)
    per_shape = torch.bincount(block_shape, minlength=len(shapes))
    rank = torch.empty_like(block_shape)
    rank[block_order] = (
        torch.arange(len(blocks), device=device) - (torch.cumsum(per_shape, 0) - per_shape)[block_shape[block_order]]
    )
    edge_order = torch.argsort(block_shape[edge_block], stable=True)
    edges_per_shape = torch.bincount(block_shape[edge_block], minlength=len(shapes)).tolist()
    groups = []
    for (n_dst, n_src), members, edges in zip(
        shapes.tolist(), torch.split(block_order, per_shape.tolist()), torch.split(edge_order, edges_per_shape),
        strict=True,
    ):  # fmt: skip
        cells = (rank[edge_block[edges]] * n_dst + position[dst[edges]]) * n_src + position[src[edges]]
        groups.append(
            BlockGroup(
                src_nodes=_slots(order, starts[block_src[members]], sizes[block_src[members]], n_src),
                dst_nodes=_slots(order, starts[block_dst[members]], sizes[block_dst[members]], n_dst),
                edges=edges,
                cells=cells,
            )
        )
    return groups


def padded_size(sizes: Tensor) -> Tensor:
    """Block sides rounded up to a multiple of :data:`SIDE_STEP`: blocks of nearby shapes share one batched product
    (fewer, larger products; the padding is zeros)."""
    return (sizes + SIDE_STEP - 1) // SIDE_STEP * SIDE_STEP


def _slots(order: Tensor, starts: Tensor, sizes: Tensor, side: int) -> Tensor:
    """``[G, side]`` node indices of each block's side (``order[start + j]`` for ``j < size``); padding slots point to
    the dummy node ``len(order)``, whose state is zero and whose messages are dropped."""
    j = torch.arange(side, device=order.device)
    index = (starts.unsqueeze(1) + j).clamp(max=len(order) - 1)
    return torch.where(j < sizes.unsqueeze(1), order[index], len(order))


#: Cells of a block group above which :func:`edge_grids` streams, and the edges it then places at once.
GRID_CHUNK = 1 << 20


def edge_grids(groups: list[BlockGroup], edge_states: Callable[[Tensor], Tensor], width: int) -> EdgeGrids:
    """Scatter the edges' states (``edge_states(edge ids) -> [n, width]``) into every group's grids (zeros where a
    block has no edge); computed once per forward pass and shared by every message-passing layer.

    A group's edges are placed once in a ``[G, n_dst, n_src, K]`` grid that both layouts are copied from; a group
    larger than :data:`GRID_CHUNK` cells (a graph of tens of millions of edges) instead writes both layouts directly,
    asking for :data:`GRID_CHUNK` edges' states at a time, so it never holds all its edge states or a third grid.
    """
    forward, backward = [], []
    k = width
    for group in groups:
        g, n_dst, n_src = group.shape
        if g * n_dst * n_src <= GRID_CHUNK:
            states = edge_states(group.edges)
            grid = states.new_zeros(g * n_dst * n_src, k).index_copy(0, group.cells, states).view(g, n_dst, n_src, k)
            forward.append(grid.permute(0, 1, 3, 2).reshape(g, n_dst, k * n_src))
            backward.append(grid.permute(0, 2, 3, 1).reshape(g, n_src, k * n_dst))
            continue
        fwd, bwd = None, None
        for start in range(0, len(group.edges), GRID_CHUNK):
            cells, edges = group.cells[start : start + GRID_CHUNK], group.edges[start : start + GRID_CHUNK]
            states = edge_states(edges)
            if fwd is None:
                fwd, bwd = states.new_zeros(g * n_dst * k * n_src), states.new_zeros(g * n_src * k * n_dst)
            block, dst, src = cells // (n_dst * n_src), cells // n_src % n_dst, cells % n_src
            features = torch.arange(k, device=cells.device)
            at_fwd = ((block * n_dst + dst) * k * n_src + src).unsqueeze(1) + features * n_src  # [n, K]
            at_bwd = ((block * n_src + src) * k * n_dst + dst).unsqueeze(1) + features * n_dst
            fwd.index_put_((at_fwd.reshape(-1),), states.reshape(-1))
            bwd.index_put_((at_bwd.reshape(-1),), states.reshape(-1))
        forward.append(fwd.view(g, n_dst, k * n_src))
        backward.append(bwd.view(g, n_src, k * n_dst))
    return EdgeGrids(forward, backward)


def grid_sums(groups: list[BlockGroup], grids: EdgeGrids, node_graph: Tensor, num_graphs: int, width: int) -> Tensor:
    """``[B, width]`` sum of the edge states of each graph, read off the forward grids (every edge is in one block,
    each block in one graph: the graph of its first target node); zeros for a graph without edges."""
    dtype = grids.forward[0].dtype if grids.forward else torch.float32
    out = torch.zeros(num_graphs, width, dtype=dtype, device=node_graph.device)
    for group, grid in zip(groups, grids.forward, strict=True):
        g, n_dst, n_src = group.shape
        out.index_add_(0, node_graph[group.dst_nodes[:, 0]], grid.view(g, n_dst, -1, n_src).sum((1, 3)))
    return out


def block_messages(
    groups: list[BlockGroup], grids: EdgeGrids, sent_forward: Tensor, sent_backward: Tensor, coef_forward: Tensor,
    coef_backward: Tensor,
) -> Tensor:  # fmt: skip
    """Sum over every edge of ``(e_ij · A) ⊙ x_j`` into its target, in both directions, by blocks.

    Along an edge ``i → j`` node ``j`` receives ``(e_ij A) ⊙ f_i`` and against it node ``i`` receives ``(e_ij B) ⊙
    b_j``; ``Σ_i (e_ij A) ⊙ f_i = Σ_k A_k ⊙ Σ_i e_ijk f_i`` is one product of the ``[n_dst, K n_src]`` grid with the
    ``[K n_src, H]`` stack of ``A_k ⊙ f``.

    Args:
        groups / grids: from :func:`block_layout` and :func:`edge_grids`.
        sent_forward / sent_backward: what nodes send along / against edges.
        coef_forward / coef_backward: ``A`` / ``B``.

    Shapes:
        ``sent_* [N, H]``, ``coef_* [K, H]`` → ``[N, H]``.
    """
    # one zero row more: the dummy node that padding slots read from and write to
    width = sent_forward.shape[1]
    out = sent_forward.new_zeros(sent_forward.shape[0] + 1, width)
    sent_forward, sent_backward = (F.pad(x, (0, 0, 0, 1)) for x in (sent_forward, sent_backward))
    for group, fwd, bwd in zip(groups, grids.forward, grids.backward, strict=True):
        directions = ((fwd, coef_forward, sent_forward, group.src_nodes, group.dst_nodes),
                      (bwd, coef_backward, sent_backward, group.dst_nodes, group.src_nodes))  # fmt: skip
        for grid, coef, sent, senders, receivers in directions:
            stacked = (coef.unsqueeze(1) * sent[senders].unsqueeze(1)).reshape(len(senders), -1, width)
            out.index_add_(0, receivers.flatten(), torch.bmm(grid, stacked).flatten(0, 1))
    return out[:-1]
