"""Deterministic train / validation / held-out query splits of a zoo.

Held-out query models are never seen in training, in five kinds, each scored separately by the evaluation:

- ``test_task``: every model of a few tasks held out entirely (unseen tasks: the fine-tuning experiment's targets);
- ``test_family``: an architecture family held out entirely (by default CNNs with three conv layers);
- ``test_hparam``: unseen hyper-parameters (the highest learning rates of the zoo);
- ``test_lineage``: fine-tuned descendants (their parents stay in the database);
- ``test_seed``: a hash-chosen share of the rest (unseen seeds of configurations seen in training).

Everything else is ``train`` or ``val``. Splits are drawn per training run (the hash of ``run_id``, or of the model
id for a zoo without runs), so the snapshots of one run always share a split and adding models never moves old
ones.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from raywse.core.spec import ArchSpec

SPLITS = ("train", "val", "test_seed", "test_hparam", "test_family", "test_lineage", "test_task")
#: Tasks whose models are never trained on: one or two per input space, label maps and class subsets alike.
UNSEEN_TASKS = ("digits/mod3", "digits/even5", "mnist14/shift5", "mnist14/1v7", "mnist1d/swap_pairs", "wine/shift1")


@dataclass(frozen=True)
class SplitConfig:
    held_out_arch: str = "cnn-3conv"  # an arch_key (see arch_key) never trained on
    held_out_tasks: tuple[str, ...] = UNSEEN_TASKS
    hparam_quantile: float = 0.85  # models with lr above this quantile are unseen hyper-parameters
    test_seed_share: float = 0.15
    val_share: float = 0.10


def arch_key(row: dict) -> str:
    """Coarse architecture key: family plus the number of conv (1-D or 2-D) or hidden linear (MLP) layers."""
    spec = ArchSpec.from_json(row["layer_spec"])
    convs = sum(1 for ly in spec.layers if ly.kind in ("conv1d", "conv2d"))
    linears = sum(1 for ly in spec.layers if ly.kind == "linear")
    return f"{row['family']}-{convs}conv" if convs else f"{row['family']}-{linears - 1}hidden"


def _unit_hash(model_id: str) -> float:
    return int(hashlib.sha1(model_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def assign_splits(rows: list[dict], config: SplitConfig | None = None) -> dict[str, str]:
    """Map every model id of a zoo manifest (rows as dicts) to one of :data:`SPLITS`."""
    config = config or SplitConfig()
    lrs = np.array([json.loads(r["hparams"]).get("lr", np.nan) for r in rows if not r.get("parent_id")], dtype=float)
    lr_cut = np.nanquantile(lrs, config.hparam_quantile) if np.isfinite(lrs).any() else np.inf
    splits: dict[str, str] = {}
    for row in rows:
        lr = json.loads(row["hparams"]).get("lr", np.nan)
        h = _unit_hash(row.get("run_id") or row["model_id"])
        if row["task"] in config.held_out_tasks:
            split = "test_task"
        elif row.get("parent_id"):
            split = "test_lineage"
        elif arch_key(row) == config.held_out_arch:
            split = "test_family"
        elif lr > lr_cut:
            split = "test_hparam"
        elif h < config.test_seed_share:
            split = "test_seed"
        elif h < config.test_seed_share + config.val_share:
            split = "val"
        else:
            split = "train"
        splits[row["model_id"]] = split
    return splits
