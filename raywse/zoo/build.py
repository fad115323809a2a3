"""Build a model zoo: plan groups (:mod:`raywse.zoo.plan`), train each as one Ray task (:mod:`raywse.zoo.group`),
write every run's snapshots as checkpoints and one manifest row each.

Fine-tuned children start from their parent's final snapshot; a parent group's children are submitted as soon as
its checkpoints are written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray
import torch

from raywse.core import console
from raywse.core.artifacts import ZooFiles, read_model_records
from raywse.core.io import load_checkpoint, save_checkpoint, write_json_atomic, write_parquet_atomic
from raywse.core.ray_session import ensure_ray
from raywse.core.records import ModelRecord, records_to_table
from raywse.zoo.datasets import get_task, load_task
from raywse.zoo.group import GroupResult, train_group
from raywse.zoo.plan import GroupPlan, RunPlan, ZooConfig, plan_zoo

LEARNED_MARGIN = 0.1  # a model has learned when its test accuracy beats its task's chance rate by this much


@ray.remote(num_cpus=1)
def _train_group_remote(group: GroupPlan, parents: list[dict[str, torch.Tensor]] | None) -> GroupResult:
    torch.set_num_threads(1)
    return train_group(group, parents)


def _description(group: GroupPlan, run: RunPlan, step: int, dataset: str) -> str:
    origin = "fine-tuned from a parent model" if run.parent_id else "trained from scratch"
    return (
        f"{group.arch.describe()}, {origin} on {dataset} ({group.input_norm} inputs), step {step} of "
        f"{group.steps}, Adam lr {run.lr:.2g}, weight decay {run.weight_decay:g}, batch {group.batch_size}"
    )


def _records(group: GroupPlan, result: GroupResult) -> list[tuple[ModelRecord, dict[str, torch.Tensor]]]:
    """Manifest rows (with their tensors) of every snapshot of every run of a trained group."""
    out = []
    for i, run in enumerate(group.runs):
        task = get_task(run.task)
        data = load_task(run.task, group.input_norm)
        spec_json = group.arch.spec(data.input_shape_for(group.arch.family)).to_json()
        for snap in result.snapshots:
            model_id = run.model_id(group.arch.family, snap.step)
            record = ModelRecord(
                model_id=model_id,
                path=f"{ZooFiles.MODELS}/{model_id}.safetensors",
                task=run.task,
                dataset=task.dataset,
                num_classes=task.num_classes,
                family=group.arch.family,
                layer_spec=spec_json,
                hparams=json.dumps(group.hparams(run), sort_keys=True),
                seed=run.seed,
                train_acc=float(snap.train_acc[i]),
                test_acc=float(snap.test_acc[i]),
                steps=group.steps,
                parent_id=run.parent_id,
                description=_description(group, run, snap.step, task.dataset),
                run_id=run.run_id,
                step=snap.step,
                epoch=snap.step * group.batch_size / len(data.x_train),
                chance_acc=data.chance_acc,
                learned=bool(snap.test_acc[i] >= data.chance_acc + LEARNED_MARGIN),
                input_norm=group.input_norm,
            )
            out.append((record, snap.tensors[i]))
    return out


def build_zoo(config: ZooConfig, out_dir: str | Path, progress: bool = True, time_limit_s: float | None = None) -> Path:
    """Build (or complete) the zoo in ``out_dir``; returns the manifest path. Models already built are skipped.

    With ``time_limit_s``, groups still running when the limit passes are cancelled and the manifest holds the
    models finished so far (a later call completes the zoo); ``build_stats.json`` records ``stopped_early``."""
    out_dir = Path(out_dir)
    (out_dir / ZooFiles.MODELS).mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / ZooFiles.MANIFEST
    groups = plan_zoo(config)
    # rows whose file vanished are rebuilt
    records = {r.model_id: r for r in read_model_records(out_dir) if (out_dir / r.path).exists()}
    todo = [gi for gi, g in enumerate(groups) if any(m not in records for r in g.runs for m in g.model_ids(r))]
    if not todo:
        return manifest_path

    ensure_ray(num_cpus=config.num_cpus)

    def submit(gi: int) -> ray.ObjectRef:
        group = groups[gi]
        parents = None
        if group.runs[0].parent_id:
            parents = [load_checkpoint(out_dir / records[r.parent_id].path)[0] for r in group.runs]
        return _train_group_remote.remote(group, parents)

    todo_set = set(todo)
    parent_of = {c: gi for gi, g in enumerate(groups) for c in g.children}
    # a child group starts when its parent group is complete: now, or once that group's result is written
    pending = {submit(gi): gi for gi in todo if parent_of.get(gi) not in todo_set}
    bar = console.progress(len(todo), "training groups", unit="group", enabled=progress)
    stats = {"groups": len(todo), "runs_trained": 0, "models_written": 0, "train_seconds": 0.0, "train_flops": 0.0}
    start = time.perf_counter()
    last_write = time.monotonic()
    stopped_early = False
    while pending:
        timeout = None if time_limit_s is None else max(0.0, start + time_limit_s - time.perf_counter())
        done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not done:
            for ref in pending:
                ray.cancel(ref, force=True)
            stopped_early = True
            break
        gi = pending.pop(done[0])
        group, result = groups[gi], ray.get(done[0])
        stats["runs_trained"] += len(group.runs)
        stats["train_seconds"] += result.train_seconds
        stats["train_flops"] += group_train_flops(group)
        for record, tensors in _records(group, result):
            if record.model_id in records:
                continue
            meta = {"model_id": record.model_id, "task": record.task, "layer_spec": record.layer_spec,
                    "input_norm": record.input_norm, "raywse_format": "1"}  # fmt: skip
            save_checkpoint(tensors, out_dir / record.path, meta)
            records[record.model_id] = record
            stats["models_written"] += 1
        for ci in group.children:
            if ci in todo_set:
                pending[submit(ci)] = ci
        bar.update(1)
        if time.monotonic() - last_write > 10 and pending:
            write_parquet_atomic(records_to_table(list(records.values()), ModelRecord), manifest_path)
            last_write = time.monotonic()
    bar.close()
    order = [m for g in groups for r in g.runs for m in g.model_ids(r)]
    planned = set(order)
    extra = [r for mid, r in records.items() if mid not in planned]  # rows of another config in the same dir
    final = [records[mid] for mid in order if mid in records] + extra
    write_parquet_atomic(records_to_table(final, ModelRecord), manifest_path)
    learned = [r.learned for r in final]
    stats.update(
        wall_seconds=time.perf_counter() - start,
        stopped_early=stopped_early,
        models=len(final),
        learned_fraction=sum(learned) / max(1, len(learned)),
    )
    write_json_atomic(stats, out_dir / ZooFiles.STATS)
    return manifest_path


def group_train_flops(group: GroupPlan) -> float:
    """Analytic training FLOPs of a group: 2 FLOPs per MAC, forward plus ~2x for backward."""
    task = get_task(group.runs[0].task)
    shape = load_task(task.name).input_shape_for(group.arch.family)
    macs = group.arch.macs_per_sample(shape, task.num_classes)
    return 6.0 * macs * group.batch_size * group.steps * len(group.runs)
