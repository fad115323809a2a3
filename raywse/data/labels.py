"""What training reads of a zoo: each model's task (as an index), test accuracy and split."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from torch_geometric.data import Data

from raywse.core.artifacts import read_zoo_manifest
from raywse.data.splits import assign_splits
from raywse.models.contrastive import LabelledGraphs


@dataclass
class ZooLabels:
    """Per model id: task index (tasks sorted by name), test accuracy, split (:func:`assign_splits`) and whether the
    model learned its task (beat chance by the zoo's margin)."""

    task: dict[str, int]
    accuracy: dict[str, float]
    split: dict[str, str]
    learned: dict[str, bool]

    @classmethod
    def from_zoo(cls, zoo_dir: str | os.PathLike) -> ZooLabels:
        rows = read_zoo_manifest(zoo_dir)
        tasks = sorted({r["task"] for r in rows})
        return cls(
            task={r["model_id"]: tasks.index(r["task"]) for r in rows},
            accuracy={r["model_id"]: float(r["test_acc"]) for r in rows},
            split=assign_splits(rows),
            learned={r["model_id"]: bool(r.get("learned", True)) for r in rows},
        )

    def ids(self, *splits: str) -> list[str]:
        """Model ids in any of ``splits``, in manifest order."""
        return [m for m, s in self.split.items() if s in splits]

    def label(self, graphs: list[Data], learned_only: bool = False) -> LabelledGraphs:
        """``graphs`` with their task indices and accuracies (only the models that learned, if ``learned_only``: a
        model that learned nothing is no example of its task)."""
        if learned_only:
            graphs = [g for g in graphs if self.learned[g.model_id]]
        task = np.array([self.task[g.model_id] for g in graphs], dtype=np.int64)
        accuracy = np.array([self.accuracy[g.model_id] for g in graphs], dtype=np.float64)
        return LabelledGraphs(list(graphs), task, accuracy)
