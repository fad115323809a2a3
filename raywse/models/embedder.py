"""The :class:`Embedder` protocol shared by the GNN encoder and every baseline, and the GNN embedder itself.

Every embedder consumes neural graphs (:mod:`raywse.graph.schema`) so all methods see the same input; ``embed``
returns a float32 ``(n, d)`` array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch_geometric.data import Data

from raywse.models.contrastive import ContrastiveConfig, EmbedAndPredict, LabelledGraphs, fit_steps
from raywse.models.encode import encode
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

#: How the trained baselines are fitted: supervised contrastive on two views of each model, permutations included.
BASELINE_CONTRASTIVE = ContrastiveConfig(accuracy_weight=0.0, permute_views=True)
#: Trains an encoder of the given config elsewhere (the evaluation: on Ray Train, as raywse's was) and returns its
#: state dict and the metrics of each epoch (``loss``, ``rank_steps``, ...).
EncoderTrainer = Callable[[EncoderConfig], tuple[dict, list[dict]]]
#: An :data:`EncoderTrainer` that also takes the directory its training run is written to (the caller's layout).
RunTrainer = Callable[[EncoderConfig, Path], tuple[dict, list[dict]]]


@runtime_checkable
class Embedder(Protocol):
    """Maps neural graphs to fixed-size vectors.

    An embedder whose index stores other vectors than its queries use (the GNN embedders:
    :meth:`~raywse.models.encoder.NeuralGraphEncoder.database_form`) keeps them in a ``database`` attribute after
    ``embed``; for every other embedder a query and an indexed model are the same vector. One that answers lineage
    queries with other vectors (the GNN embedders' first-layer sketch and structure code:
    :meth:`~raywse.models.encoder.NeuralGraphEncoder.kinship_form`) keeps those in a ``kinship`` attribute.
    """

    name: str

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> Embedder: ...

    def embed(self, graphs: list[Data]) -> np.ndarray: ...


def labelled(graphs: list[Data], labels: np.ndarray | None) -> LabelledGraphs:
    """Graphs with task labels for a baseline fit (each graph its own label when there are none)."""
    task = np.arange(len(graphs)) if labels is None else np.asarray(labels)
    return LabelledGraphs(list(graphs), task, np.zeros(len(graphs)))


class GNNEmbedder:
    """Embeds graphs with a :class:`NeuralGraphEncoder`. ``fit`` trains it with ``trainer`` when one is given (which
    trains on the data it was built for, not the graphs passed to ``fit``), else contrastively on the graphs passed,
    in this process, when ``train_steps > 0``."""

    name = "gnn"

    def __init__(
        self,
        encoder: NeuralGraphEncoder | None = None,
        *,
        train_steps: int = 0,
        contrastive: ContrastiveConfig = BASELINE_CONTRASTIVE,
        seed: int = 0,
        trainer: EncoderTrainer | None = None,
    ) -> None:
        if encoder is None:
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                encoder = self._new_encoder(EncoderConfig())
        self.encoder = encoder.eval()
        self.train_steps, self.contrastive = train_steps, replace(contrastive, seed=seed)
        self.trainer = trainer
        self.training: dict | None = None  # with a trainer: the epochs and optimiser steps (over ranks) it took
        self.history: list[float] = []
        self.accuracy: np.ndarray | None = None  # the accuracy head's predictions of the last ``embed`` call
        self.database: np.ndarray | None = None  # the last ``embed`` call's graphs as an index stores them
        self.kinship: np.ndarray | None = None  # ... and their lineage queries (None: the encoder keeps no sketch)

    @staticmethod
    def _new_encoder(config: EncoderConfig) -> NeuralGraphEncoder:
        return NeuralGraphEncoder(config)

    @classmethod
    def from_state(cls, state_dict: dict, config: EncoderConfig, **kwargs) -> GNNEmbedder:
        """Wrap a trained encoder from its state dict and config."""
        encoder = cls._new_encoder(config)
        encoder.load_state_dict(state_dict)
        return cls(encoder, **kwargs)

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> GNNEmbedder:
        if self.trainer is not None:
            state, epochs = self.trainer(self.encoder.config)
            self.encoder.load_state_dict(state)
            self.history = [m["loss"] for m in epochs]
            self.training = {"epochs": len(epochs), "rank_steps": epochs[-1]["rank_steps"] if epochs else 0}
        elif self.train_steps > 0:
            data = labelled([self.encoder.prepare(g) for g in graphs], labels)
            model = EmbedAndPredict(self.encoder).train()
            self.history = fit_steps(
                self.contrastive, data, model, model.parameters(),
                self.train_steps,
            )  # fmt: skip
            self.encoder.eval()
        return self

    def embed(self, graphs: list[Data]) -> np.ndarray:
        encoded = encode(self.encoder, graphs, database=True, kinship=self.encoder.answers_lineage)
        self.accuracy, self.database, self.kinship = encoded.accuracy, encoded.database, encoded.kinship
        return encoded.embeddings
