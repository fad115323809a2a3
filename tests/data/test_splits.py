"""Splits are drawn per training run and hold whole tasks out."""

from __future__ import annotations

from raywse.data.splits import SPLITS, UNSEEN_TASKS, assign_splits
from raywse.zoo.datasets import get_task


def test_splits_per_run_with_unseen_tasks(demo_plan_rows):
    rows = demo_plan_rows
    splits = assign_splits(rows)
    assert set(splits.values()) == set(SPLITS)
    by_run: dict[str, set[str]] = {}
    for row in rows:
        by_run.setdefault(row["run_id"], set()).add(splits[row["model_id"]])
        if row["task"] in UNSEEN_TASKS:
            assert splits[row["model_id"]] == "test_task"
    assert all(len(s) == 1 for s in by_run.values())  # the snapshots of a run share their split
    assert all(get_task(t) for t in UNSEEN_TASKS)
    train_tasks = {r["task"] for r in rows if splits[r["model_id"]] == "train"}
    assert not train_tasks & set(UNSEEN_TASKS) and len(train_tasks) >= 40
