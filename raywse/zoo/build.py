"""Build a model zoo: sample model configs, train them in batched groups on Ray, write checkpoints and a manifest.

A *group* is up to ``group_size`` models sharing task, architecture, steps and batch size; each model has its own
seed (init and minibatches), learning rate and weight decay. One group is one Ray task running one batched tensor
program (:mod:`raywse.zoo.batched`). Fine-tuned children start from their parent's checkpoint; the children of a
parent group are trained as soon as that group's checkpoints are written.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import ray
import torch
from tqdm import tqdm

from raywse.core.artifacts import ZooFiles, read_model_records
from raywse.core.io import load_checkpoint, save_checkpoint, write_json_atomic, write_parquet_atomic
from raywse.core.ray_session import ensure_ray
from raywse.core.records import ModelRecord, records_to_table
from raywse.zoo.batched import (
    Arch,
    batched_accuracy,
    init_params,
    minibatch_indices,
    model_accuracy,
    train_batched,
)
from raywse.zoo.datasets import TaskData, TaskSpec, get_task, list_tasks, load_task


@dataclass
class ZooConfig:
    """What to build; the defaults are the ``small`` preset (the demo zoo). Presets are named constructors."""

    num_parents: int = field(default=720, metadata={"help": "models trained from scratch"})
    group_size: int = field(default=24, metadata={"help": "models per batched training program (one Ray task)"})
    steps_choices: tuple[int, ...] = (50, 200, 600)
    finetune_steps: tuple[int, ...] = (50, 200)
    lr_range: tuple[float, ...] = (3e-4, 3e-2)  # Adam lr (low, high), sampled log-uniformly
    batch_choices: tuple[int, ...] = (16, 32, 64)
    wd_choices: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3)
    finetune_group_fraction: float = 0.25  # of parent groups; half of each chosen group's models get children
    tasks: tuple[str, ...] = ()  # empty = all tasks
    seed: int = 0
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if len(self.lr_range) != 2 or not 0 < self.lr_range[0] <= self.lr_range[1]:
            raise ValueError(f"lr_range must be (low, high) with 0 < low <= high, got {self.lr_range}")

    @classmethod
    def tiny(cls, **overrides) -> ZooConfig:
        """~31 (task, family) combinations x 2 models plus fine-tuned children: ~70 models, seconds of training."""
        return cls(num_parents=62, group_size=2, steps_choices=(150, 300), finetune_steps=(30,),
                   lr_range=(3e-3, 5e-2), **overrides)  # fmt: skip

    @classmethod
    def small(cls, **overrides) -> ZooConfig:
        """The demo zoo: ~1,000 models in about a minute on 2 cores."""
        return cls(**overrides)

    @classmethod
    def bench(cls, **overrides) -> ZooConfig:
        """The benchmark zoo: ~10,000 models."""
        return cls(num_parents=8200, group_size=64, **overrides)

    @classmethod
    def preset(cls, name: str, **overrides) -> ZooConfig:
        """The preset called ``name`` (``tiny`` | ``small`` | ``bench``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown zoo preset {name!r} (choose from {', '.join(PRESETS)})")
        return getattr(cls, name)(**overrides)


PRESETS = ("tiny", "small", "bench")


@dataclass
class ModelPlan:
    """One model to train: its id, seed and optimiser settings; ``parent_id`` set for fine-tuned children."""

    model_id: str
    seed: int
    lr: float
    weight_decay: float
    parent_id: str = ""


@dataclass
class GroupPlan:
    """Models trained together in one batched program."""

    task: str
    arch: Arch
    steps: int
    batch_size: int
    models: list[ModelPlan] = field(default_factory=list)
    children: list[int] = field(default_factory=list)  # indices of child groups fine-tuned from this one

    def hparams(self, model: ModelPlan) -> dict:
        return {
            "family": self.arch.family,
            "arch": self.arch.to_dict(),
            "optimizer": "adam",
            "lr": model.lr,
            "weight_decay": model.weight_decay,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seed": model.seed,
            "init": "parent" if model.parent_id else "scratch",
        }


def _sample_arch(rng: np.random.Generator, family: str) -> Arch:
    if family == "mlp":
        depth = int(rng.integers(1, 4))
        widths = tuple(int(rng.choice([16, 32, 64])) for _ in range(depth))
        return Arch("mlp", widths, str(rng.choice(["relu", "leaky_relu", "tanh", "gelu"])))
    depth = int(rng.integers(2, 4))
    channels = tuple(int(rng.choice([4, 8, 16])) for _ in range(depth))
    strides = (1, *(int(rng.choice([1, 2])) for _ in range(depth - 1)))
    widths = (int(rng.choice([16, 32])),) if rng.random() < 0.5 else ()
    return Arch("cnn", widths, "relu", channels, strides)


def _model_id(task: str, arch: Arch, hparams: dict, parent_id: str) -> str:
    key = json.dumps({"task": task, "hparams": hparams, "parent": parent_id}, sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return f"{task.replace('/', '-')}_{arch.family}_{digest}"


def _finalise_ids(group: GroupPlan) -> None:
    for model in group.models:
        model.model_id = _model_id(group.task, group.arch, group.hparams(model), model.parent_id)


def plan_zoo(config: ZooConfig) -> list[GroupPlan]:
    """Deterministically sample every group (parents first, then their fine-tuned children)."""
    rng = np.random.default_rng(config.seed)
    tasks = [t for t in list_tasks() if not config.tasks or t.name in config.tasks]
    combos = [(t, fam) for t in tasks for fam in t.families]  # cycled, so every image task gets an MLP and a CNN
    lo, hi = np.log(config.lr_range[0]), np.log(config.lr_range[1])
    groups: list[GroupPlan] = []
    count = 0
    while count < config.num_parents:
        task, family = combos[len(groups) % len(combos)]
        size = min(config.group_size, config.num_parents - count)
        group = GroupPlan(
            task.name,
            _sample_arch(rng, family),
            int(rng.choice(config.steps_choices)),
            int(rng.choice(config.batch_choices)),
        )
        for _ in range(size):
            seed = int(rng.integers(2**31))
            group.models.append(
                ModelPlan("", seed, float(np.exp(rng.uniform(lo, hi))), float(rng.choice(config.wd_choices)))
            )
        _finalise_ids(group)
        groups.append(group)
        count += size
    parents = list(groups)
    for parent in parents:
        if rng.random() >= config.finetune_group_fraction:
            continue
        chosen = sorted(rng.choice(len(parent.models), max(1, len(parent.models) // 2), replace=False).tolist())
        targets = _finetune_targets(get_task(parent.task), tasks)
        for _ in range(int(rng.integers(2, 4))):
            child = GroupPlan(
                str(rng.choice(targets)), parent.arch, int(rng.choice(config.finetune_steps)), parent.batch_size
            )
            for i in chosen:
                p = parent.models[i]
                lr = p.lr * float(10 ** rng.uniform(-1.5, -0.5))
                child.models.append(ModelPlan("", int(rng.integers(2**31)), lr, p.weight_decay, p.model_id))
            _finalise_ids(child)
            parent.children.append(len(groups))
            groups.append(child)
    return groups


def _finetune_targets(parent: TaskSpec, tasks: list[TaskSpec]) -> list[str]:
    """Tasks a child may be fine-tuned on: same inputs and output count (always including the parent's task)."""
    return [t.name for t in tasks if t.input_key == parent.input_key and t.num_classes == parent.num_classes]


@ray.remote(num_cpus=1)
def _train_group_remote(group: GroupPlan, data: TaskData, parents: list[dict[str, torch.Tensor]] | None) -> dict:
    torch.set_num_threads(1)
    return train_group(group, data, parents)


def train_group(group: GroupPlan, data: TaskData, parents: list[dict[str, torch.Tensor]] | None = None) -> dict:
    """Train one group; returns per-model tensors and accuracies (test accuracy via ``raywse.core.spec.forward``)."""
    input_shape = data.input_shape_for(group.arch.family)
    spec = group.arch.spec(input_shape)
    inits = parents or [init_params(group.arch, input_shape, data.num_classes, m.seed) for m in group.models]
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    n = len(data.x_train)
    indices = torch.stack([minibatch_indices(n, group.steps, group.batch_size, m.seed) for m in group.models], 1)
    lr = torch.tensor([m.lr for m in group.models], dtype=torch.float32)
    wd = torch.tensor([m.weight_decay for m in group.models], dtype=torch.float32)
    t0 = time.perf_counter()
    trained = train_batched(spec, stacked, data.x_train, data.y_train, indices, lr, wd)
    train_seconds = time.perf_counter() - t0
    train_acc = batched_accuracy(spec, trained, data.x_train, data.y_train)
    tensors = [{k: v[i].clone() for k, v in trained.items()} for i in range(len(group.models))]
    test_acc = [model_accuracy(spec, t, data.x_test, data.y_test) for t in tensors]
    return {"tensors": tensors, "train_acc": train_acc, "test_acc": test_acc, "train_seconds": train_seconds}


def _description(group: GroupPlan, model: ModelPlan, dataset: str) -> str:
    origin = f"fine-tuned from a parent model for {group.steps} steps" if model.parent_id else f"{group.steps} steps"
    return (
        f"{group.arch.describe()}, trained on {dataset}, {origin}, Adam lr {model.lr:.2g}, "
        f"weight decay {model.weight_decay:g}, batch {group.batch_size}"
    )


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
    todo = [gi for gi, g in enumerate(groups) if any(m.model_id not in records for m in g.models)]
    if not todo:
        return manifest_path

    ensure_ray(num_cpus=config.num_cpus)
    data_refs: dict[str, ray.ObjectRef] = {}

    def submit(gi: int) -> ray.ObjectRef:
        group = groups[gi]
        if group.task not in data_refs:
            data_refs[group.task] = ray.put(load_task(group.task))
        parents = None
        if group.models[0].parent_id:
            parents = [load_checkpoint(out_dir / records[m.parent_id].path)[0] for m in group.models]
        return _train_group_remote.remote(group, data_refs[group.task], parents)

    todo_set = set(todo)
    parent_of = {c: gi for gi, g in enumerate(groups) for c in g.children}
    # a child group starts when its parent group is complete: now, or once that group's result is written
    pending = {submit(gi): gi for gi in todo if parent_of.get(gi) not in todo_set}
    bar = tqdm(total=len(todo), desc="zoo groups", unit="group", disable=not progress)
    stats = {"groups": len(todo), "models_trained": 0, "train_seconds": 0.0, "train_flops": 0.0}
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
        dataset = get_task(group.task).dataset
        shape = load_task(group.task).input_shape_for(group.arch.family)
        stats["models_trained"] += len(group.models)
        stats["train_seconds"] += result["train_seconds"]
        stats["train_flops"] += group_train_flops(group, shape, get_task(group.task).num_classes)
        for i, model in enumerate(group.models):
            if model.model_id in records:
                continue
            rel = f"{ZooFiles.MODELS}/{model.model_id}.safetensors"
            spec_json = group.arch.spec(shape).to_json()
            meta = {"model_id": model.model_id, "task": group.task, "layer_spec": spec_json, "raywse_format": "1"}
            save_checkpoint(result["tensors"][i], out_dir / rel, meta)
            records[model.model_id] = ModelRecord(
                model_id=model.model_id,
                path=rel,
                task=group.task,
                dataset=dataset,
                num_classes=get_task(group.task).num_classes,
                family=group.arch.family,
                layer_spec=spec_json,
                hparams=json.dumps(group.hparams(model), sort_keys=True),
                seed=model.seed,
                train_acc=float(result["train_acc"][i]),
                test_acc=float(result["test_acc"][i]),
                steps=group.steps,
                parent_id=model.parent_id,
                description=_description(group, model, dataset),
            )
        for ci in group.children:
            if ci in todo_set:
                pending[submit(ci)] = ci
        bar.update(1)
        if time.monotonic() - last_write > 10 and pending:
            write_parquet_atomic(records_to_table(list(records.values()), ModelRecord), manifest_path)
            last_write = time.monotonic()
    bar.close()
    order = [m.model_id for g in groups for m in g.models]
    planned = set(order)
    extra = [r for mid, r in records.items() if mid not in planned]  # rows of another config in the same dir
    final = [records[mid] for mid in order if mid in records] + extra
    write_parquet_atomic(records_to_table(final, ModelRecord), manifest_path)
    stats.update(wall_seconds=time.perf_counter() - start, stopped_early=stopped_early)
    write_json_atomic(stats, out_dir / ZooFiles.STATS)
    return manifest_path


def group_train_flops(group: GroupPlan, input_shape: tuple[int, ...], num_classes: int) -> float:
    """Analytic training FLOPs of a group: 2 FLOPs per MAC, forward plus ~2x for backward."""
    macs = group.arch.macs_per_sample(input_shape, num_classes)
    return 6.0 * macs * group.batch_size * group.steps * len(group.models)
