"""Baseline embedders, all consuming neural graphs (the :class:`~raywse.models.embedder.Embedder` protocol), and
their registry: :func:`make_baseline` builds one by name from a :class:`BaselineSettings`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from raywse.models.baselines.nonequivariant import NonEquivariantEncoder, NonEquivariantGNNEmbedder
from raywse.models.baselines.reference import (
    ArchOracleEmbedder,
    FirstLayerSketchEmbedder,
    RandomInitGNNEmbedder,
)
from raywse.models.baselines.unlearned import InputSaliencyEmbedder, MetadataTextEmbedder
from raywse.models.baselines.weights import FlatMLPEmbedder, WeightPCAEmbedder, WeightStatsEmbedder
from raywse.models.embedder import Embedder, EncoderTrainer
from raywse.models.encoder import EncoderConfig


@dataclass
class BaselineSettings:
    """What the baselines may use besides the graphs, and their training budgets."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)  # the GNN baselines' architecture
    descriptions: Mapping[str, str] = field(default_factory=dict)  # model_id -> text, for metadata_text
    flat_mlp_steps: int = 100
    gnn_steps: int = 40  # in-process steps of gnn_nonequivariant, when it has no gnn_trainer
    gnn_trainer: EncoderTrainer | None = None  # trains gnn_nonequivariant's encoder (the evaluation: as raywse's)
    seed: int = 0


_REGISTRY: dict[str, Callable[[BaselineSettings], Embedder]] = {
    "arch_oracle": lambda s: ArchOracleEmbedder(),
    "random_init_gnn": lambda s: RandomInitGNNEmbedder(s.encoder, seed=s.seed),
    "first_layer_sketch": lambda s: FirstLayerSketchEmbedder(seed=s.seed),
    "weight_stats": lambda s: WeightStatsEmbedder(),
    "weight_pca": lambda s: WeightPCAEmbedder(seed=s.seed),
    "flat_mlp": lambda s: FlatMLPEmbedder(steps=s.flat_mlp_steps, seed=s.seed),
    "gnn_nonequivariant": lambda s: NonEquivariantGNNEmbedder(
        NonEquivariantEncoder(s.encoder), train_steps=s.gnn_steps, seed=s.seed, trainer=s.gnn_trainer
    ),
    "input_saliency": lambda s: InputSaliencyEmbedder(),
    "metadata_text": lambda s: MetadataTextEmbedder(
        describe=lambda g: s.descriptions.get(g.model_id) or g.model_id, seed=s.seed
    ),
}
#: Every registered baseline, in report order (the reference rows ``arch_oracle``, ``random_init_gnn`` and
#: ``first_layer_sketch`` first).
BASELINES = tuple(_REGISTRY)


def make_baseline(name: str, settings: BaselineSettings) -> Embedder:
    """A fresh (unfitted) baseline called ``name``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown baseline {name!r} (choose from {', '.join(BASELINES)})")
    return _REGISTRY[name](settings)


__all__ = [
    "BASELINES",
    "ArchOracleEmbedder",
    "BaselineSettings",
    "FirstLayerSketchEmbedder",
    "FlatMLPEmbedder",
    "InputSaliencyEmbedder",
    "MetadataTextEmbedder",
    "NonEquivariantEncoder",
    "NonEquivariantGNNEmbedder",
    "RandomInitGNNEmbedder",
    "WeightPCAEmbedder",
    "WeightStatsEmbedder",
    "make_baseline",
]
