"""The deliberately non-equivariant GNN baseline: the raywse encoder plus an embedding of each hidden neuron's index
within its layer, so it reads hidden node order (trained with permutation views to learn what it can)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from raywse.graph.schema import NodeKind
from raywse.models.embedder import GNNEmbedder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


def hidden_index(batch: Batch) -> Tensor:
    """Index of every node within its (graph, layer), read from node order (deliberately order-dependent)."""
    key = batch.batch * (int(batch.node_layer.max()) + 1) + batch.node_layer
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    starts = torch.searchsorted(sorted_key, sorted_key, right=False)
    index = torch.empty_like(key)
    index[order] = torch.arange(key.numel(), device=key.device) - starts
    return index


class NonEquivariantEncoder(NeuralGraphEncoder):
    """The same encoder plus an embedding of each hidden node's index within its layer: NOT permutation invariant.
    Its config says so (``reads_node_order``), so an export of it loads as one."""

    def __init__(self, config: EncoderConfig | None = None, max_hidden_index: int = 1024) -> None:
        super().__init__(replace(config or EncoderConfig(), reads_node_order=True))
        self.max_hidden_index = max_hidden_index
        self.index_emb = nn.Embedding(max_hidden_index, self.config.hidden)

    def node_features(self, batch: Batch, *features: Tensor) -> Tensor:
        h = super().node_features(batch, *features)
        hidden = (batch.node_kind == NodeKind.HIDDEN).unsqueeze(-1)
        return h + self.index_emb(hidden_index(batch) % self.max_hidden_index) * hidden


class NonEquivariantGNNEmbedder(GNNEmbedder):
    """GNN baseline that reads hidden node order; trained with permutation augmentation."""

    name = "gnn_nonequivariant"

    @staticmethod
    def _new_encoder(config: EncoderConfig) -> NeuralGraphEncoder:
        return NonEquivariantEncoder(config)
