"""Baselines on raw weights: per-layer statistics, PCA of the flattened weights, and an MLP on them.

Padding note: kernels smaller than a graph's largest are zero-padded in ``edge_attr``; statistics below use the
nonzero entries only (an exactly-zero trained weight is rare and would be skipped too).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import Tensor
from torch_geometric.data import Data

from raywse.graph.schema import NodeKind
from raywse.models.contrastive import fit_steps
from raywse.models.embedder import BASELINE_CONTRASTIVE, labelled
from raywse.models.features import mlp

N_STATS = 7  # min, q25, median, q75, max, mean, std


def _stats(values: Tensor) -> np.ndarray:
    if values.numel() == 0:
        return np.zeros(N_STATS, dtype=np.float32)
    v = values.double()
    q = torch.quantile(v, v.new_tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    std = v.std() if v.numel() > 1 else v.new_zeros(())
    return torch.cat([q, v.mean().view(1), std.view(1)]).float().numpy()


def _layer_params(g: Data) -> list[tuple[Tensor, Tensor]]:
    """Per node layer ``l >= 1`` (input side first): its nonzero weight entries and its biases."""
    dst_layer = g.node_layer[g.edge_index[1]]
    out = []
    for layer in range(1, int(g.node_layer.max()) + 1):
        w = g.edge_attr[dst_layer == layer].flatten()
        out.append((w[w != 0], g.x.view(-1)[g.node_layer == layer]))
    return out


def _flatten(g: Data, length: int) -> np.ndarray:
    """All weights in edge order then all non-input biases, zero-padded / truncated to ``length``."""
    flat = torch.cat([g.edge_attr.flatten(), g.x.view(-1)[g.node_kind != NodeKind.INPUT]]).float()
    out = np.zeros(length, dtype=np.float32)
    n = min(length, flat.numel())
    out[:n] = flat[:n].numpy()
    return out


def _flatten_all(graphs: list[Data], length: int) -> np.ndarray:
    """``[len(graphs), length]``: :func:`_flatten` of each graph."""
    return np.stack([_flatten(g, length) for g in graphs])


class _Standardised:
    """Mixin: z-score features with statistics from ``fit`` (identity before fit)."""

    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def _fit_scaler(self, feats: np.ndarray) -> None:
        self.mean_ = feats.mean(0)
        self.scale_ = np.where(feats.std(0) > 1e-12, feats.std(0), 1.0)

    def _apply_scaler(self, feats: np.ndarray) -> np.ndarray:
        if self.mean_ is None:
            return feats
        return ((feats - self.mean_) / self.scale_).astype(np.float32)


class WeightStatsEmbedder(_Standardised):
    """Unterthiner et al. (2020): per-layer weight and bias statistics, layers aligned from both ends.

    For the first and the last ``num_layers`` node layers: 7 statistics of the weights, 7 of the biases and a
    presence flag (zero-padded for shallower nets), standardised with the fit set's statistics.
    """

    name = "weight_stats"

    def __init__(self, num_layers: int = 4) -> None:
        self.num_layers = num_layers

    def _features(self, g: Data) -> np.ndarray:
        layers = _layer_params(g)
        k = self.num_layers
        width = 2 * N_STATS + 1
        feats = np.zeros((2, k, width), dtype=np.float32)
        for side, chosen in enumerate((layers[:k], layers[::-1][:k])):
            for i, (w, b) in enumerate(chosen):
                feats[side, i] = np.concatenate([_stats(w), _stats(b), [1.0]])
        return feats.reshape(-1)

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> WeightStatsEmbedder:
        self._fit_scaler(np.stack([self._features(g) for g in graphs]))
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        return self._apply_scaler(np.stack([self._features(g) for g in graphs])).astype(np.float32)


class WeightPCAEmbedder:
    """PCA of flattened weights (node / edge order, padded or truncated). NOT permutation invariant, by design."""

    name = "weight_pca"

    def __init__(self, dim: int = 32, length: int = 4096, seed: int = 0) -> None:
        self.dim, self.length, self.seed = dim, length, seed
        self.pca: PCA | None = None

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> WeightPCAEmbedder:
        x = _flatten_all(graphs, self.length)
        self.mean_, std = x.mean(0), x.std(0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        self.pca = PCA(n_components=min(self.dim, *x.shape), random_state=self.seed).fit((x - self.mean_) / self.scale_)
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        if self.pca is None:
            raise RuntimeError("WeightPCAEmbedder.embed before fit")
        z = self.pca.transform((_flatten_all(graphs, self.length) - self.mean_) / self.scale_)
        out = np.zeros((len(graphs), self.dim), dtype=np.float32)
        out[:, : z.shape[1]] = z
        return out


class FlatMLPEmbedder:
    """MLP on flattened weights, trained with NT-Xent on views that include hidden-node permutations."""

    name = "flat_mlp"

    def __init__(
        self,
        dim: int = 32,
        length: int = 2048,
        hidden: int = 256,
        steps: int = 100,
        seed: int = 0,
    ) -> None:
        self.length, self.steps, self.seed = length, steps, seed
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.model = mlp([length, hidden, hidden, dim])
        self.scale = 1.0
        self.history: list[float] = []

    def _encode(self, flat: np.ndarray) -> Tensor:
        return F.normalize(self.model(torch.from_numpy(flat) / self.scale), dim=-1)

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> FlatMLPEmbedder:
        flat = _flatten_all(graphs, self.length)
        self.scale = float(flat[flat != 0].std()) if (flat != 0).any() else 1.0
        contrastive = replace(BASELINE_CONTRASTIVE, seed=self.seed)
        self.model.train()
        self.history = fit_steps(
            contrastive, labelled(graphs, labels), lambda views: (self._encode(_flatten_all(views, self.length)), None),
            self.model.parameters(), self.steps, batched_views=False,  # unpadded graphs of mixed widths: a list
        )  # fmt: skip
        self.model.eval()
        return self

    @torch.no_grad()
    def embed(self, graphs: list[Data]) -> np.ndarray:
        self.model.eval()
        return self._encode(_flatten_all(graphs, self.length)).numpy().astype(np.float32)
