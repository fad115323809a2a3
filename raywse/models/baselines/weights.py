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
from torch_geometric.data import Batch, Data

from raywse.graph.kernels import kernel_shape_batches
from raywse.graph.schema import NodeKind
from raywse.models.contrastive import ShapeBatches, fit_steps
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


def _flatten_batch(batch: Batch, length: int) -> np.ndarray:
    """``[B, length]``: each graph of a batch of one kernel shape as all its weights in edge order, then all its
    non-input biases, zero-padded / truncated to ``length``. A graph's edges are one run of the batch's edges, and
    its nodes its ``ptr`` slice: views relabel nodes and drop edges, never reorder them."""
    num = int(batch.num_graphs)
    edges = torch.bincount(batch.batch[batch.edge_index[1]], minlength=num).tolist()
    nodes = torch.diff(batch.ptr).tolist()
    biases = batch.x.view(-1).float()
    out = np.zeros((num, length), dtype=np.float32)
    parts = zip(
        torch.split(batch.edge_attr.float(), edges), torch.split(biases, nodes),
        torch.split(batch.node_kind != NodeKind.INPUT, nodes), strict=True,
    )  # fmt: skip
    for row, (weights, bias, not_input) in enumerate(parts):
        flat = torch.cat([weights.flatten(), bias[not_input]])[:length]
        out[row, : len(flat)] = flat.numpy()
    return out


def _flatten_views(views: ShapeBatches, length: int) -> np.ndarray:
    """Batches of one kernel shape each, with the rows they fill: the rows' :func:`_flatten_batch`."""
    out = np.zeros((sum(len(rows) for rows, _ in views), length), dtype=np.float32)
    for rows, batch in views:
        out[rows] = _flatten_batch(batch, length)
    return out


def _flatten_all(graphs: list[Data], length: int) -> np.ndarray:
    """``[len(graphs), length]``: :func:`_flatten_batch` of each graph (batched by kernel shape)."""
    batches = [(rows, Batch.from_data_list([graphs[i] for i in rows])) for rows in kernel_shape_batches(graphs, 256)]
    return _flatten_views(batches, length)


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

        def forward(views: ShapeBatches) -> tuple[Tensor, None]:
            return self._encode(_flatten_views(views, self.length)), None

        self.history = fit_steps(
            contrastive, labelled(graphs, labels), forward, self.model.parameters(), self.steps,
            batched_views=False,  # kernels not padded: a batch per kernel shape
        )  # fmt: skip
        self.model.eval()
        return self

    @torch.no_grad()
    def embed(self, graphs: list[Data]) -> np.ndarray:
        self.model.eval()
        return self._encode(_flatten_all(graphs, self.length)).numpy().astype(np.float32)
