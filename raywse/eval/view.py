"""The evaluated models' labels (task, family, split, parent, accuracy, label-map group), aligned with embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raywse.data.splits import assign_splits
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

    @property
    def held_out(self) -> np.ndarray:
        return np.char.startswith(self.split.astype(str), "test_")


def label_map_groups() -> dict[str, str]:
    """Task → group key for tasks that share inputs and output count with another task (differ by label map only)."""
    groups: dict[str, list[str]] = {}
    for t in list_tasks():
        groups.setdefault(f"{t.input_key}|{t.num_classes}", []).append(t.name)
    return {name: key for key, names in groups.items() if len(names) > 1 for name in names}


def zoo_view(rows: list[dict], ids: list[str]) -> ZooView:
    """The labels of the models ``ids`` (in that order) from the zoo manifest's ``rows``."""
    by_id = {r["model_id"]: r for r in rows}
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
    )
