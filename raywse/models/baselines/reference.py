"""Reference rows every method must beat: ``arch_oracle`` (the architecture alone, no weights), ``random_init_gnn``
(the raywse encoder with untrained, seeded weights) and ``first_layer_sketch`` (training-free, what the first layer's
weights tell of a network's initialisation: :func:`~raywse.graph.lineage.first_layer_sketch`).

``arch_oracle`` reads :func:`~raywse.graph.structure.architecture_key`, the one definition of "same architecture".
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from raywse.graph.kernels import kernel_shape_batches
from raywse.graph.lineage import first_layer_sketch
from raywse.graph.structure import architecture_key
from raywse.models.embedder import GNNEmbedder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder


class ArchOracleEmbedder:
    """No weights: a one-hot of :func:`architecture_key`, so models of one architecture have cosine 1 and models of
    different architectures cosine 0 (the order among equals is the evaluation's seeded tie-break).

    ``fit`` gives each architecture of the fit graphs a coordinate; ``embed`` gives every architecture it has not seen
    a fresh coordinate after those (in sorted key order, so the result is deterministic). Fresh coordinates are
    assigned per call: compare the embeddings of one ``embed`` call (the evaluation embeds all models at once).
    The width is ``dim``, or more when there are more architectures.
    """

    name = "arch_oracle"

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.index_: dict[str, int] = {}

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> ArchOracleEmbedder:
        self.index_ = {key: i for i, key in enumerate(sorted({architecture_key(g) for g in graphs}))}
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        keys = [architecture_key(g) for g in graphs]
        unseen = sorted(set(keys) - set(self.index_))
        coords = self.index_ | {key: len(self.index_) + i for i, key in enumerate(unseen)}
        out = np.zeros((len(graphs), max(self.dim, len(coords))), dtype=np.float32)
        out[np.arange(len(graphs)), [coords[k] for k in keys]] = 1.0
        return out


class RandomInitGNNEmbedder(GNNEmbedder):
    """The raywse encoder architecture (``config``) with untrained weights drawn from ``seed``; ``fit`` does nothing."""

    name = "random_init_gnn"

    def __init__(self, config: EncoderConfig, seed: int = 0) -> None:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            encoder = NeuralGraphEncoder(config)
        super().__init__(encoder, train_steps=0, seed=seed)

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> RandomInitGNNEmbedder:
        return self


class FirstLayerSketchEmbedder:
    """Training-free: each network's :func:`~raywse.graph.lineage.first_layer_sketch` (``dim`` wide), which ranks its
    fine-tuned relatives first; ``fit`` does nothing."""

    name = "first_layer_sketch"

    def __init__(self, dim: int = 1024, batch_size: int = 256, seed: int = 0) -> None:
        self.dim, self.batch_size, self.seed = dim, batch_size, seed

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> FirstLayerSketchEmbedder:
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        out = np.zeros((len(graphs), self.dim), dtype=np.float32)
        for rows in kernel_shape_batches(graphs, self.batch_size):
            out[rows] = first_layer_sketch(Batch.from_data_list([graphs[i] for i in rows]), self.dim, self.seed).numpy()
        return out
