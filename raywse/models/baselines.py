"""Baseline embedders, all consuming neural graphs (see :class:`raywse.models.embedder.Embedder`).

Padding note: kernels smaller than a graph's largest are zero-padded in ``edge_attr``; statistics below use the
nonzero entries only (an exactly-zero trained weight is rare and would be skipped too).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

from raywse.models.augment import make_view
from raywse.models.embedder import GNNEmbedder, fit_contrastive
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder, mlp

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
    flat = torch.cat([g.edge_attr.flatten(), g.x.view(-1)[g.node_kind != 0]]).float()
    out = np.zeros(length, dtype=np.float32)
    n = min(length, flat.numel())
    out[:n] = flat[:n].numpy()
    return out


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

    def _matrix(self, graphs: list[Data]) -> np.ndarray:
        return np.stack([_flatten(g, self.length) for g in graphs])

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> WeightPCAEmbedder:
        x = self._matrix(graphs)
        self.mean_, std = x.mean(0), x.std(0)
        self.scale_ = np.where(std > 1e-12, std, 1.0)
        self.pca = PCA(n_components=min(self.dim, *x.shape), random_state=self.seed).fit((x - self.mean_) / self.scale_)
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        if self.pca is None:
            raise RuntimeError("WeightPCAEmbedder.embed before fit")
        z = self.pca.transform((self._matrix(graphs) - self.mean_) / self.scale_)
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
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        self.length, self.steps, self.batch_size, self.seed = length, steps, batch_size, seed
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.model = mlp([length, hidden, hidden, dim])
        self.scale = 1.0
        self.history: list[float] = []

    def _encode(self, graphs: list[Data]) -> Tensor:
        x = torch.from_numpy(np.stack([_flatten(g, self.length) for g in graphs])) / self.scale
        return F.normalize(self.model(x), dim=-1)

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> FlatMLPEmbedder:
        flat = np.stack([_flatten(g, self.length) for g in graphs])
        self.scale = float(flat[flat != 0].std()) if (flat != 0).any() else 1.0
        self.history = fit_contrastive(
            self.model,
            self._encode,
            graphs,
            labels,
            steps=self.steps,
            batch_size=self.batch_size,
            view=lambda g, gen: make_view(g, gen, permute=True),
            seed=self.seed,
        )
        return self

    @torch.no_grad()
    def embed(self, graphs: list[Data]) -> np.ndarray:
        self.model.eval()
        return self._encode(graphs).numpy().astype(np.float32)


def hidden_index(batch: Batch) -> Tensor:
    """Index of every node within its (graph, layer), read from node order (deliberately order-dependent)."""
    key = batch.batch * (int(batch.node_layer.max()) + 1) + batch.node_layer
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    starts = torch.searchsorted(sorted_key, sorted_key, right=False)
    index = torch.empty_like(key)
    index[order] = torch.arange(key.numel()) - starts
    return index


class NonEquivariantEncoder(NeuralGraphEncoder):
    """The same encoder plus an embedding of each hidden node's index within its layer: NOT permutation invariant."""

    def __init__(self, config: EncoderConfig | None = None, max_hidden_index: int = 1024) -> None:
        super().__init__(config)
        self.max_hidden_index = max_hidden_index
        self.index_emb = nn.Embedding(max_hidden_index, self.config.hidden)

    def node_features(self, batch: Batch, bias: Tensor, log_scale: Tensor, num_layers: Tensor) -> Tensor:
        h = super().node_features(batch, bias, log_scale, num_layers)
        hidden = (batch.node_kind == 1).unsqueeze(-1)
        return h + self.index_emb(hidden_index(batch) % self.max_hidden_index) * hidden


class NonEquivariantGNNEmbedder(GNNEmbedder):
    """GNN baseline that reads hidden node order; trained with permutation augmentation."""

    name = "gnn_nonequivariant"

    def __init__(self, encoder: NeuralGraphEncoder | None = None, **kwargs) -> None:
        kwargs.setdefault("permute_views", True)
        super().__init__(encoder, **kwargs)

    @staticmethod
    def _new_encoder(config: EncoderConfig) -> NeuralGraphEncoder:
        return NonEquivariantEncoder(config)


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
        is_input = g.node_kind[src] == 0
        mag = g.edge_attr[is_input].abs()
        count = (mag != 0).sum(-1).float()
        total = torch.zeros(g.num_nodes).index_add_(0, src[is_input], mag.sum(-1))
        cnt = torch.zeros(g.num_nodes).index_add_(0, src[is_input], count)
        inputs = torch.nonzero((g.node_kind == 0) & (g.node_pos < self.max_inputs)).view(-1)
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
