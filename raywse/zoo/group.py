"""Train one planned group: the runs of several tasks of one interface as one batched program, saved at snapshots.

Tasks of one interface can differ in their inputs (a flipped or inverted copy, a class subset) as well as their label
map, so the group's inputs are the concatenation of each distinct input block; a run draws its minibatches from its
own task's block and reads its own labels (a ``[runs, rows]`` label table).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from raywse.core.spec import ArchSpec
from raywse.zoo.arch import init_params
from raywse.zoo.batched import batched_accuracy, minibatch_indices, model_accuracy, train_batched
from raywse.zoo.datasets import TaskData, get_task, load_task
from raywse.zoo.plan import GroupPlan

#: Training samples a snapshot's train accuracy is measured on (evenly spaced; the test accuracy uses all).
TRAIN_ACC_SAMPLES = 2048


@dataclass
class Snapshot:
    """One saved point of every run of a group: per-run tensors and accuracies."""

    step: int
    tensors: list[dict[str, torch.Tensor]]
    train_acc: list[float]
    test_acc: list[float]


@dataclass
class GroupResult:
    snapshots: list[Snapshot]
    train_seconds: float


def group_tasks(group: GroupPlan) -> dict[str, TaskData]:
    """The data of every task of the group's runs, under the group's input normalisation."""
    return {run.task: load_task(run.task, group.input_norm) for run in group.runs}


def group_inputs(group: GroupPlan, data: dict[str, TaskData]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(x [rows, d], y [runs, rows], block start per run)``: distinct input blocks concatenated."""
    blocks: dict[str, tuple[int, torch.Tensor]] = {}
    offset = 0
    for run in group.runs:
        key = get_task(run.task).input_key
        if key not in blocks:
            blocks[key] = (offset, data[run.task].x_train)
            offset += len(data[run.task].x_train)
    x = torch.cat([block for _, block in blocks.values()])
    y = torch.zeros(len(group.runs), len(x), dtype=torch.int64)
    starts = []
    for i, run in enumerate(group.runs):
        start = blocks[get_task(run.task).input_key][0]
        labels = data[run.task].y_train
        y[i, start : start + len(labels)] = labels
        starts.append(start)
    return x, y, starts


def train_group(group: GroupPlan, parents: list[dict[str, torch.Tensor]] | None = None) -> GroupResult:
    """Train every run of ``group`` (from ``parents``' tensors when given, else from seeded inits)."""
    data = group_tasks(group)
    first = data[group.runs[0].task]
    input_shape = first.input_shape_for(group.arch.family)
    spec = group.arch.spec(input_shape)
    x, y, starts = group_inputs(group, data)
    inits = parents or [init_params(group.arch, input_shape, first.num_classes, r.seed) for r in group.runs]
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    indices = torch.stack(
        [
            start + minibatch_indices(len(data[r.task].x_train), group.steps, group.batch_size, r.seed)
            for r, start in zip(group.runs, starts, strict=True)
        ],
        1,
    )
    lr = torch.tensor([r.lr for r in group.runs], dtype=torch.float32)
    wd = torch.tensor([r.weight_decay for r in group.runs], dtype=torch.float32)
    t0 = time.perf_counter()
    trained = train_batched(spec, stacked, x, y, indices, lr, wd, group.snapshot_steps)
    train_seconds = time.perf_counter() - t0
    snapshots = []
    for step, params in zip(group.snapshot_steps, trained, strict=True):
        tensors = [{k: v[i].clone() for k, v in params.items()} for i in range(len(group.runs))]
        test_acc = [
            model_accuracy(spec, t, data[r.task].x_test, data[r.task].y_test)
            for t, r in zip(tensors, group.runs, strict=True)
        ]
        snapshots.append(Snapshot(step, tensors, _train_accuracy(group, spec, params, data), test_acc))
    return GroupResult(snapshots, train_seconds)


def _train_accuracy(
    group: GroupPlan, spec: ArchSpec, params: dict[str, torch.Tensor], data: dict[str, TaskData]
) -> list[float]:
    """Train accuracy per run on at most :data:`TRAIN_ACC_SAMPLES` evenly spaced training samples (all 11,250 of
    ``mnist14`` cost a transformer group as much as its training), batched over the runs of each task."""
    out = [0.0] * len(group.runs)
    for task, task_data in data.items():
        rows = [i for i, r in enumerate(group.runs) if r.task == task]
        sub = {k: v[rows] for k, v in params.items()}
        every = -(-len(task_data.x_train) // TRAIN_ACC_SAMPLES)
        x, y = task_data.x_train[::every], task_data.y_train[::every]
        for i, acc in zip(rows, batched_accuracy(spec, sub, x, y), strict=True):
            out[i] = acc
    return out
