"""One message-passing layer over neural graphs (PyG ``MessagePassing``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing
from torch_geometric.utils import scatter

from raywse.models.features import mlp


class NeuralGraphConv(MessagePassing):
    """Bidirectional message passing with FiLM edge modulation, residual LayerNorm updates and edge updates.

    Messages flow along every edge in both directions (a learned direction embedding tells them apart):
    ``m_ij = φm(FiLM_e(W_d h_i + W_s h_j + W_e e_ij + dir))`` with ``scale, shift = Linear(e_ij)``, aggregated by
    sum and scaled by ``1/sqrt(deg)``; ``h_i' = LN(h_i + φu([h_i, m_i]))``; optionally
    ``e_ij' = LN(e_ij + φe(U_s h_src + U_d h_dst + U_e e_ij))``. Node projections are computed per node before
    gathering, and the linear ``φm`` commutes with the sum (``Σ_j W x_j = W Σ_j x_j``), so it is applied once per
    node after aggregation: per-edge work is elementwise apart from the edge projections.
    """

    def __init__(self, hidden: int, edge_hidden: int, dropout: float = 0.0, update_edges: bool = True) -> None:
        super().__init__(aggr="add")
        self.lin_dst = nn.Linear(hidden, hidden)
        self.lin_src = nn.Linear(hidden, hidden, bias=False)
        self.lin_edge = nn.Linear(edge_hidden, 3 * hidden)  # edge term, FiLM scale, FiLM shift
        self.direction = nn.Embedding(2, hidden)
        self.dropout = nn.Dropout(dropout)
        self.phi_m = nn.Linear(hidden, hidden, bias=False)  # linear: applied after the sum, once per node
        self.phi_u = mlp([2 * hidden, hidden, hidden], dropout)
        self.norm = nn.LayerNorm(hidden)
        self.update_edges = update_edges
        if update_edges:
            self.edge_src = nn.Linear(hidden, edge_hidden)
            self.edge_dst = nn.Linear(hidden, edge_hidden, bias=False)
            self.edge_self = nn.Linear(edge_hidden, edge_hidden, bias=False)
            self.phi_e = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(edge_hidden, edge_hidden))
            self.edge_norm = nn.LayerNorm(edge_hidden)

    def forward(self, h: Tensor, edge_index: Tensor, e: Tensor) -> tuple[Tensor, Tensor]:
        edge_term, scale, shift = self.lin_edge(e).chunk(3, dim=-1)
        dst_term, src_term = self.lin_dst(h), self.lin_src(h)
        reverse = edge_index.flip(0)
        # One propagate per direction over the same edge tensors (no duplicated per-edge FiLM parameters); the
        # direction embedding is a per-node term, so it is added to the node projections, not to every message.
        aggr = sum(
            self.propagate(
                index,
                dst_term=dst_term + self.direction.weight[d],
                src_term=src_term,
                edge_term=edge_term,
                scale=scale,
                shift=shift,
            )  # fmt: skip
            for d, index in enumerate((edge_index, reverse))
        )
        ones = torch.ones(edge_index.shape[1], dtype=h.dtype, device=h.device)
        deg = scatter(ones, edge_index[1], dim=0, dim_size=h.shape[0]) + scatter(
            ones, edge_index[0], dim=0, dim_size=h.shape[0]
        )
        m = self.phi_m(aggr) / deg.clamp(min=1).sqrt().unsqueeze(-1)
        h_new = self.norm(h + self.phi_u(torch.cat([h, m], dim=-1)))
        if self.update_edges:
            src, dst = edge_index
            delta = self.edge_src(h_new)[src] + self.edge_dst(h_new)[dst] + self.edge_self(e)
            e = self.edge_norm(e + self.phi_e(delta))
        return h_new, e

    def message(
        self, dst_term_i: Tensor, src_term_j: Tensor, edge_term: Tensor, scale: Tensor, shift: Tensor
    ) -> Tensor:
        """``m_ij`` before the (linear, post-aggregation) ``φm``: FiLM-modulated sum of node and edge terms."""
        return self.dropout(F.silu((dst_term_i + src_term_j + edge_term) * (1 + scale) + shift))
