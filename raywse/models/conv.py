"""One message-passing layer over neural graphs, in two forms that compute the same function: by blocks (dense
matrix products per weight tensor, the fast path) and as a PyG ``MessagePassing`` over the edge list (the reference)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import torch
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from raywse.models.blocks import BlockGroup, EdgeGrids, block_messages
from raywse.models.features import mlp


class NeuralGraphConv(MessagePassing):
    """Bidirectional message passing with edge-modulated messages and a residual LayerNorm update.

    Along every edge ``i → j`` (a weight of the network, with edge state ``e_ij``), ``j`` receives ``(A e_ij) ⊙ f_i``
    and, against it, ``i`` receives ``(B e_ij) ⊙ b_j``, with ``f = W_f h + c_f`` and ``b = W_b h + c_b``. A node sums
    what it receives, scales the sum by ``1/sqrt(deg)`` and updates ``h_i' = LN(h_i + φ([h_i, m_i]))``. Messages are
    linear in the edge state, so a weight tensor's messages are products of its dense ``[out, in]`` grid of edge
    states with the node states (:func:`~raywse.models.blocks.block_messages`): no ``[E, hidden]`` tensor is built.

    Args:
        hidden: node state width ``H``.
        edge_hidden: edge state width ``K``.
        dropout: dropout inside the update MLP.

    Shapes:
        ``h [N, H]``, ``edge_index [2, E]``, ``e [E, K]``, ``inv_sqrt_deg [N, 1]`` → ``[N, H]``.
    """

    def __init__(self, hidden: int, edge_hidden: int, dropout: float = 0.0) -> None:
        super().__init__(aggr="add")
        _remove_generated_source(type(self))
        self.send_forward = nn.Linear(hidden, hidden)
        self.send_backward = nn.Linear(hidden, hidden)
        self.coef_forward = nn.Linear(edge_hidden, hidden, bias=False)
        self.coef_backward = nn.Linear(edge_hidden, hidden, bias=False)
        self.phi_u = mlp([2 * hidden, hidden, hidden], dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(
        self,
        h: Tensor,
        edge_index: Tensor,
        e: Tensor,
        inv_sqrt_deg: Tensor,
        blocks: tuple[list[BlockGroup], EdgeGrids] | None = None,
    ) -> Tensor:
        """One layer; by blocks when ``blocks`` (the layout and its edge grids of ``e``) is given, else per edge."""
        sent_forward, sent_backward = self.send_forward(h), self.send_backward(h)
        if blocks is not None:
            groups, grids = blocks
            coef_f, coef_b = self.coef_forward.weight.t(), self.coef_backward.weight.t()
            aggr = block_messages(groups, grids, sent_forward, sent_backward, coef_f, coef_b)
        else:
            aggr = self.propagate(edge_index, x=sent_forward, coef=self.coef_forward(e))
            aggr = aggr + self.propagate(edge_index.flip(0), x=sent_backward, coef=self.coef_backward(e))
        return self.norm(h + self.phi_u(torch.cat([h, aggr * inv_sqrt_deg], dim=-1)))

    def message(self, x_j: Tensor, coef: Tensor) -> Tensor:
        """``(A e_ij) ⊙ x_j``: the sender's state modulated by the edge (reference form)."""
        return coef * x_j


def _remove_generated_source(cls: type) -> None:
    """PyG renders a ``MessagePassing`` class's ``propagate`` into a temporary ``.py`` file, imports it and never
    deletes it (one file per process that builds the layer); the module is loaded by then, so the file goes."""
    path = getattr(sys.modules.get(f"{cls.__module__}_{cls.__name__}_propagate"), "__file__", None)
    if path and os.path.dirname(path) == tempfile.gettempdir():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
