"""The :class:`Embedder` protocol shared by the GNN encoder and the baselines, plus a small contrastive fit loop.

Every embedder consumes neural graphs (``torch_geometric.data.Data``, docs/architecture.md) so all methods see the
same input; ``embed`` returns a float32 ``(n, d)`` array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader

from raywse.models.augment import make_view
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder
from raywse.models.losses import nt_xent, supervised_nt_xent


@runtime_checkable
class Embedder(Protocol):
    """Maps neural graphs to fixed-size vectors."""

    name: str

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> Embedder: ...

    def embed(self, graphs: list[Data]) -> np.ndarray: ...


def fit_contrastive(
    model: nn.Module,
    encode: Callable[[list[Data]], Tensor],
    graphs: Sequence[Data],
    labels: np.ndarray | None = None,
    *,
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 1e-3,
    temperature: float = 0.1,
    view: Callable[[Data, torch.Generator], Data] = make_view,
    seed: int = 0,
) -> list[float]:
    """Train ``model`` (through ``encode``: graphs → embeddings) on pairs of views; returns the loss per step.

    Without labels: NT-Xent between two views of the same graph. With labels: supervised NT-Xent over both views
    (graphs sharing a label are positives as well).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    label_t = None if labels is None else torch.as_tensor(np.asarray(labels))
    n = len(graphs)
    history = []
    model.train()
    for _ in range(steps):
        idx = torch.randperm(n, generator=gen)[: min(batch_size, n)].tolist()
        z1 = encode([view(graphs[i], gen) for i in idx])
        z2 = encode([view(graphs[i], gen) for i in idx])
        if label_t is None:
            loss = nt_xent(z1, z2, temperature)
        else:
            y = label_t[idx]
            loss = supervised_nt_xent(torch.cat([z1, z2]), torch.cat([y, y]), temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    model.eval()
    return history


class GNNEmbedder:
    """Embeds graphs with a :class:`NeuralGraphEncoder`; ``fit`` trains it contrastively when ``train_steps > 0``."""

    name = "gnn"

    def __init__(
        self,
        encoder: NeuralGraphEncoder | None = None,
        *,
        train_steps: int = 0,
        batch_size: int = 32,
        lr: float = 1e-3,
        temperature: float = 0.1,
        permute_views: bool = False,
        seed: int = 0,
    ) -> None:
        if encoder is None:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                encoder = self._new_encoder(EncoderConfig())
        self.encoder = encoder.eval()
        self.train_steps, self.batch_size, self.lr, self.temperature = train_steps, batch_size, lr, temperature
        self.permute_views, self.seed = permute_views, seed
        self.history: list[float] = []

    @staticmethod
    def _new_encoder(config: EncoderConfig) -> NeuralGraphEncoder:
        return NeuralGraphEncoder(config)

    @classmethod
    def from_state(cls, state_dict: dict, config: EncoderConfig | dict, **kwargs) -> GNNEmbedder:
        """Wrap a trained encoder from its state dict and config (e.g. ``encoder.pt`` + ``config.json``)."""
        config = config if isinstance(config, EncoderConfig) else EncoderConfig(**config)
        encoder = cls._new_encoder(config)
        encoder.load_state_dict(state_dict)
        return cls(encoder, **kwargs)

    def _encode(self, graphs: list[Data]) -> Tensor:
        return self.encoder(Batch.from_data_list([self.encoder.prepare(g) for g in graphs]))

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> GNNEmbedder:
        if self.train_steps > 0:

            def view(g: Data, gen: torch.Generator) -> Data:
                return make_view(g, gen, permute=self.permute_views)

            self.history = fit_contrastive(
                self.encoder,
                self._encode,
                graphs,
                labels,
                steps=self.train_steps,
                batch_size=self.batch_size,
                lr=self.lr,
                temperature=self.temperature,
                view=view,
                seed=self.seed,
            )
        return self

    @torch.no_grad()
    def embed(self, graphs: list[Data], batch_size: int = 64) -> np.ndarray:
        self.encoder.eval()
        loader = DataLoader([self.encoder.prepare(g) for g in graphs], batch_size=batch_size, shuffle=False)
        out = [self.encoder(batch) for batch in loader]
        return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, self.encoder.config.embed_dim))
