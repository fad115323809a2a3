"""The evaluated models' labels (task, family, split, parent, accuracy, label-map group, architecture), aligned with
embeddings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from raywse.core.spec import ArchSpec
from raywse.data.splits import assign_splits
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.structure import architecture_key
from raywse.zoo.arch import Arch
from raywse.zoo.datasets import list_tasks


@dataclass
class ZooView:
    """Per-model labels of the evaluated models, aligned with the embedding rows."""

    ids: list[str]
    task: np.ndarray
    family: np.ndarray
    split: np.ndarray
    parent: np.ndarray
    test_acc: np.ndarray
    group: np.ndarray  # label-map group ("" when no other task shares the inputs and output count)
    arch: np.ndarray  # architecture key (raywse.graph.structure.architecture_key: the layer structure of the graph)
    run: np.ndarray  # training run (the snapshots of one run share it)
    parent_run: np.ndarray  # the training run of the model's parent ("" for a model trained from scratch)
    learned: np.ndarray  # bool: test accuracy >= the task's chance rate + 0.1 (only learned models are relevant)
    train_acc: np.ndarray | None = None  # the zoo's recorded train-split accuracy (metadata: no embedder reads it)

    @property
    def held_out(self) -> np.ndarray:
        return np.char.startswith(self.split.astype(str), "test_")

    def unrelated(self, q: int) -> np.ndarray:
        """Models outside model ``q``'s family tree of runs: not its own run, its parent's run, a child run of its
        run, or a sibling run (another child of its parent). Task retrieval never ranks those (lineage is scored on
        its own)."""
        mask = (self.run != self.run[q]) & (self.parent_run != self.run[q])
        if self.parent_run[q]:
            mask &= (self.run != self.parent_run[q]) & (self.parent_run != self.parent_run[q])
        return mask


def label_map_groups() -> dict[str, str]:
    """Task → group key for tasks that share inputs and output count with another task (differ by label map only)."""
    groups: dict[str, list[str]] = {}
    for t in list_tasks():
        groups.setdefault(f"{t.input_key}|{t.num_classes}", []).append(t.name)
    return {name: key for key, names in groups.items() if len(names) > 1 for name in names}


@lru_cache(maxsize=4096)
def _architecture(layer_spec: str, arch: str, num_classes: int) -> str:
    spec = ArchSpec.from_json(layer_spec)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(arch).items()}
    shapes = Arch(**fields).param_shapes(spec.input_shape, num_classes)
    return architecture_key(to_neural_graph({name: torch.zeros(shape) for name, shape in shapes}, spec))


def manifest_architecture(row: dict) -> str:
    """The :func:`~raywse.graph.structure.architecture_key` of a zoo model from its manifest row alone: the neural
    graph of zero weights shaped by the row's ``layer_spec``, ``hparams["arch"]`` and ``num_classes`` (the key
    depends on shapes only, so it equals the key of the model's own graph). A row without an ``arch`` in its
    hyper-parameters gets its layer spec and class count as the key."""
    arch = json.loads(row.get("hparams") or "{}").get("arch")
    if arch is None:
        return f"spec {row['layer_spec']} classes {row['num_classes']}"
    return _architecture(row["layer_spec"], json.dumps(arch, sort_keys=True), int(row["num_classes"]))


def zoo_view(rows: list[dict], ids: list[str]) -> ZooView:
    """The labels of the models ``ids`` (in that order) from the zoo manifest's ``rows``."""
    by_id = {r["model_id"]: r for r in rows}
    run_of = {r["model_id"]: r.get("run_id") or r["model_id"] for r in rows}
    splits = assign_splits(rows)
    groups = label_map_groups()
    sel = [by_id[m] for m in ids]
    return ZooView(
        ids=list(ids),
        task=np.array([r["task"] for r in sel]),
        family=np.array([r["family"] for r in sel]),
        split=np.array([splits[m] for m in ids]),
        parent=np.array([r.get("parent_id") or "" for r in sel]),
        test_acc=np.array([r["test_acc"] for r in sel], dtype=np.float64),
        group=np.array([groups.get(r["task"], "") for r in sel]),
        arch=np.array([manifest_architecture(r) for r in sel]),
        run=np.array([run_of[r["model_id"]] for r in sel]),
        parent_run=np.array([run_of.get(r.get("parent_id") or "", "") for r in sel]),
        learned=np.array([bool(r.get("learned", True)) for r in sel], dtype=bool),
        train_acc=np.array([r.get("train_acc", np.nan) for r in sel], dtype=np.float64),
    )
