"""Baselines that need no contrastive training: input saliency (training-free) and metadata text (no weights)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from torch_geometric.data import Data

from raywse.graph.schema import NodeKind


class InputSaliencyEmbedder:
    """Training-free: mean ``|w|`` of each input node's outgoing weights, by input position, L2-normalised.

    For MLPs a position is an input feature; for CNNs an input channel (usually 1-3 values), so vectors of different
    families share few informative coordinates and cross-family comparison is weak.
    """

    name = "input_saliency"

    def __init__(self, max_inputs: int = 1024) -> None:
        self.max_inputs = max_inputs

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> InputSaliencyEmbedder:
        return self

    def _features(self, g: Data) -> np.ndarray:
        src = g.edge_index[0]
        is_input = g.node_kind[src] == NodeKind.INPUT
        mag = g.edge_attr[is_input].abs()
        count = (mag != 0).sum(-1).float()
        total = torch.zeros(g.num_nodes).index_add_(0, src[is_input], mag.sum(-1))
        cnt = torch.zeros(g.num_nodes).index_add_(0, src[is_input], count)
        inputs = torch.nonzero((g.node_kind == NodeKind.INPUT) & (g.node_pos < self.max_inputs)).view(-1)
        out = torch.zeros(self.max_inputs)
        out[g.node_pos[inputs]] = total[inputs] / cnt[inputs].clamp(min=1)
        return F.normalize(out, dim=0).numpy()

    def embed(self, graphs: list[Data]) -> np.ndarray:
        return np.stack([self._features(g) for g in graphs]).astype(np.float32)


def default_description(g: Data) -> str:
    """``g.description`` if set, else the model id."""
    return str(getattr(g, "description", None) or g.model_id)


class MetadataTextEmbedder:
    """TF-IDF of a per-model description (e.g. task, architecture, hyper-parameters), reduced by truncated SVD.

    Falls back to the raw L2-normalised TF-IDF (padded / truncated to ``dim``) when the vocabulary is too small.
    """

    name = "metadata_text"

    def __init__(self, dim: int = 32, describe: Callable[[Data], str] = default_description, seed: int = 0) -> None:
        self.dim, self.describe, self.seed = dim, describe, seed
        self.vectorizer = TfidfVectorizer(token_pattern=r"[A-Za-z]+|\d+(?:\.\d+)?")
        self.svd: TruncatedSVD | None = None

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> MetadataTextEmbedder:
        x = self.vectorizer.fit_transform([self.describe(g) for g in graphs])
        n_comp = min(self.dim, x.shape[1] - 1, x.shape[0] - 1)
        self.svd = TruncatedSVD(n_comp, random_state=self.seed).fit(x) if n_comp >= 2 else None
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        x = self.vectorizer.transform([self.describe(g) for g in graphs])
        z = self.svd.transform(x) if self.svd is not None else x.toarray()
        out = np.zeros((len(graphs), self.dim), dtype=np.float32)
        width = min(self.dim, z.shape[1])
        out[:, :width] = z[:, :width]
        norm = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / np.where(norm > 0, norm, 1.0)).astype(np.float32)
