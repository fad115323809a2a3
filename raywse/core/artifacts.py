"""Every file name a raywse run writes, in one place, and the one reader of the zoo manifest.

A run directory (``raywse demo --out-dir runs/demo``) holds one sub-directory per stage (:class:`RunLayout`); each
stage's own file names are the constants of :class:`ZooFiles`, :class:`GraphFiles`, :class:`EncoderFiles`,
:class:`IndexFiles`, :class:`ReportFiles` and :class:`TuneFiles`. No other module spells a file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from raywse.core.records import ModelRecord, table_to_records


class ZooFiles:
    """A model zoo: ``models/*.safetensors`` and ``manifest.parquet`` (one :class:`ModelRecord` per row)."""

    MANIFEST = "manifest.parquet"
    MODELS = "models"
    STATS = "build_stats.json"


class GraphFiles:
    """A graphify output: ``shards/shard-*.parquet``, a manifest of the graphs and the table of failures."""

    SHARDS = "shards"
    SHARD_GLOB = "shard-*.parquet"

    @staticmethod
    def shard(key: str) -> str:
        """The file name of the shard identified by ``key`` (a digest of its model ids)."""
        return f"shard-{key}.parquet"

    MANIFEST = "manifest.parquet"
    ERRORS = "errors.parquet"


class EncoderFiles:
    """An exported encoder (``weights`` + ``config`` with its version) and the training run around it."""

    WEIGHTS = "encoder.pt"
    CONFIG = "config.json"
    DIR = "encoder"  # inside a training run directory
    RAY_RESULTS = "ray_results"
    HISTORY = "history.json"  # inside each Ray Train checkpoint
    STATE = "state.pt"  # inside each Ray Train checkpoint
    TRAIN_METRICS = "train_metrics.json"
    TRAIN_CONFIG = "train_config.json"  # the TrainConfig the run was trained with


class IndexFiles:
    """A versioned FAISS index: ``CURRENT`` names the live ``versions/<n>/``."""

    CURRENT = "CURRENT"
    LOCK = "writer.lock"
    VERSIONS = "versions"
    INDEX = "index.faiss"
    IDS = "ids.parquet"
    META = "meta.json"
    EMBEDDINGS = "embeddings.parquet"
    FIRST_LAYERS = "first_layers.parquet"  # each model's first layer, which lineage searches re-score with


class ForeignFiles:
    """A foreign zoo directory (``foreign/train_foreign.py``)."""

    MANIFEST = "manifest.csv"
    ZOO_PROBES = "zoo_probes.npz"  # the raywse zoo's probe inputs (raywse probes), as handed to the foreign code
    PROBES = "probes.npz"  # those inputs under the foreign zoo's normalisation (what it passes as --probe-data)


class ReportFiles:
    """An evaluation report directory."""

    REPORT = "report.md"
    METRICS = "metrics.json"
    EMBEDDINGS = "embeddings"  # one <embedder>.parquet each
    DATABASE_EMBEDDINGS = "embeddings/database"  # the zoo's as an index stores them, where that differs (raywse)
    KINSHIP_EMBEDDINGS = "embeddings/kinship"  # the zoo's lineage queries, where they differ (the GNN embedders)
    FOREIGN_EMBEDDINGS = "embeddings/foreign"  # the foreign zoo's, one <embedder>.parquet each
    FOREIGN_HINTED_EMBEDDINGS = "embeddings/foreign_hinted"  # the same, graphified with their stated activations
    FIRST_LAYERS = "first_layers.parquet"  # every zoo model's first layer, as the lineage setting re-scores with it
    BASELINE_RUNS = "baselines"  # a baseline trained as raywse was: its training run, one directory each
    PROJECTION = "pca_raywse.png"
    PRECISION_CURVES = "precision_at_k.png"


class TuneFiles:
    BEST_CONFIG = "best_config.json"
    RAY_RESULTS = EncoderFiles.RAY_RESULTS


@dataclass(frozen=True)
class RunLayout:
    """Where each stage of the main job writes inside one run directory."""

    root: Path

    @property
    def zoo(self) -> Path:
        return self.root / "zoo"

    @property
    def graphs(self) -> Path:
        return self.root / "graphs"

    @property
    def foreign(self) -> Path:
        return self.root / "foreign"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def encoder(self) -> Path:
        return self.train / EncoderFiles.DIR

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def report(self) -> Path:
        return self.root / "report"


def zoo_manifest_path(zoo: str | os.PathLike) -> Path:
    """The manifest of a zoo given its directory or the manifest file itself."""
    path = Path(zoo)
    return path / ZooFiles.MANIFEST if path.is_dir() or not path.suffix else path


def read_zoo_manifest(zoo: str | os.PathLike, columns: list[str] | None = None) -> list[dict]:
    """The zoo manifest's rows as dicts; ``FileNotFoundError`` with a hint when there is none."""
    path = zoo_manifest_path(zoo)
    if not path.exists():
        raise FileNotFoundError(f"no zoo manifest at {path} (build one with `raywse zoo --out {path.parent}`)")
    return pq.read_table(path, columns=columns).to_pylist()


def read_model_records(zoo: str | os.PathLike) -> list[ModelRecord]:
    """The zoo manifest as typed records; empty when the zoo has no manifest yet."""
    path = zoo_manifest_path(zoo)
    return table_to_records(pq.read_table(path), ModelRecord) if path.exists() else []
