"""What a zoo holds: the configuration, its presets and the deterministic plan of batched training groups.

The plan keeps architecture independent of task. Tasks that share an *interface* (input space and output count,
e.g. every 2-class digits task) are trained together: a group is one architecture drawn from the family's pool, one
input normalisation, step count and batch size, and runs spread round-robin over all tasks of the interface, each
run with its own seed, learning rate and weight decay. So no architecture, optimiser setting or step count says
which task a model learned; each run is saved at several points along training (its *snapshots*), and some runs
are fine-tuned onto another task of the same interface (lineage).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np

from raywse.zoo.arch import FAMILIES, IMAGE_FAMILIES, Arch
from raywse.zoo.datasets import INPUT_NORMS, TaskSpec, list_tasks


@dataclass
class ZooConfig:
    """What to build; the defaults are the ``small`` preset (the demo zoo). Presets are named constructors."""

    num_runs: int = field(default=1100, metadata={"help": "training runs from scratch (each saves several snapshots)"})
    group_size: int = field(default=8, metadata={"help": "most runs per batched training program (one Ray task)"})
    runs_per_task: int = field(default=2, metadata={"help": "runs of each task of the interface in one group"})
    min_groups: int = field(default=8, metadata={"help": "fewest groups (so distinct architectures) per interface"})
    arch_pool: tuple[int, ...] = (24, 16, 12, 12)  # architectures drawn once per family (FAMILIES), shared by tasks
    steps_choices: tuple[int, ...] = (240, 480)  # MLP runs
    cnn_steps_choices: tuple[int, ...] = (300, 500)  # runs of the image families (CNN, ResNet, transformer)
    snapshots: tuple[float, ...] = (0.5, 0.75, 1.0)  # fractions of a run's steps at which it is saved
    finetune_steps: tuple[int, ...] = (300, 600)
    lr_range: tuple[float, ...] = (2e-3, 3e-2)  # Adam lr (low, high), sampled log-uniformly
    batch_choices: tuple[int, ...] = (32, 64)
    wd_choices: tuple[float, ...] = (0.0, 1e-5, 1e-4, 1e-3)
    input_norms: tuple[str, ...] = INPUT_NORMS
    finetune_group_fraction: float = 0.15  # of parent groups; half of each chosen group's runs get a child
    tasks: tuple[str, ...] = ()  # empty = all tasks
    seed: int = 0
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if len(self.lr_range) != 2 or not 0 < self.lr_range[0] <= self.lr_range[1]:
            raise ValueError(f"lr_range must be (low, high) with 0 < low <= high, got {self.lr_range}")
        if not self.snapshots or not all(0 < f <= 1 for f in self.snapshots) or max(self.snapshots) != 1:
            raise ValueError(f"snapshots must be fractions in (0, 1] ending at 1, got {self.snapshots}")
        if len(self.arch_pool) != len(FAMILIES) or min(self.arch_pool) < 1:
            raise ValueError(f"arch_pool must be one pool size >= 1 per family {FAMILIES}, got {self.arch_pool}")
        bad = set(self.input_norms) - set(INPUT_NORMS)
        if bad or not self.input_norms:
            raise ValueError(f"input_norms must be a non-empty subset of {INPUT_NORMS}, got {self.input_norms}")

    @classmethod
    def tiny(cls, **overrides) -> ZooConfig:
        """17 tasks (every interface but one), each with each of its families once, two snapshots per run, plus
        fine-tuned children: ~130 models in about a minute (the test suite's zoo)."""
        return cls(num_runs=0, group_size=8, runs_per_task=1, min_groups=1, arch_pool=(6, 4, 3, 3),
                   steps_choices=(200,), cnn_steps_choices=(400,), snapshots=(0.5, 1.0), finetune_steps=(120,),
                   lr_range=(3e-3, 2e-2),
                   finetune_group_fraction=0.5, tasks=TINY_TASKS, **overrides)  # fmt: skip

    @classmethod
    def small(cls, **overrides) -> ZooConfig:
        """The demo zoo: ~6,190 models (~2,060 runs x 3 snapshots; MLPs, CNNs, ResNets, transformers) in ~5 minutes
        on 2 cores."""
        return cls(**overrides)

    @classmethod
    def bench(cls, **overrides) -> ZooConfig:
        """The benchmark zoo: ~12,100 models (~4,040 runs x 3 snapshots; twice the demo's runs per task)."""
        return cls(num_runs=0, group_size=16, runs_per_task=4, **overrides)

    @classmethod
    def preset(cls, name: str, **overrides) -> ZooConfig:
        """The preset called ``name`` (``tiny`` | ``small`` | ``bench``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown zoo preset {name!r} (choose from {', '.join(PRESETS)})")
        return getattr(cls, name)(**overrides)


PRESETS = ("tiny", "small", "bench")
#: The tiny preset's tasks: label-map groups, class subsets, an input transform, every dataset.
TINY_TASKS = (
    "digits/all10", "digits/shift1", "digits/flip", "digits/parity", "digits/ge5", "digits/first5", "digits/last5",
    "mnist14/all10", "mnist14/parity", "mnist14/ge5", "mnist1d/all10", "mnist1d/parity",
    "iris", "iris/shift1", "wine", "breast_cancer", "breast_cancer/swap",
)  # fmt: skip


@dataclass
class RunPlan:
    """One training run: its task, seed and optimiser settings; ``parent_id`` (the parent's final snapshot) is set
    for fine-tuned runs. ``run_id`` ties the run's snapshots together."""

    task: str
    seed: int
    lr: float
    weight_decay: float
    parent_id: str = ""
    run_id: str = ""

    def model_id(self, family: str, step: int) -> str:
        """The id of this run's snapshot at ``step``."""
        return f"{self.task.replace('/', '-')}_{family}_{self.run_id[4:]}_s{step}"


@dataclass
class GroupPlan:
    """Runs trained together in one batched program: one architecture, interface, normalisation and schedule."""

    interface: str
    arch: Arch
    input_norm: str
    steps: int
    batch_size: int
    snapshot_steps: tuple[int, ...]
    runs: list[RunPlan] = field(default_factory=list)
    children: list[int] = field(default_factory=list)  # indices of child groups fine-tuned from this one

    def hparams(self, run: RunPlan) -> dict:
        return {
            "family": self.arch.family,
            "arch": self.arch.to_dict(),
            "optimizer": "adam",
            "lr": run.lr,
            "weight_decay": run.weight_decay,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seed": run.seed,
            "input_norm": self.input_norm,
            "init": "parent" if run.parent_id else "scratch",
        }

    def model_ids(self, run: RunPlan) -> list[str]:
        return [run.model_id(self.arch.family, s) for s in self.snapshot_steps]


def sample_arch(rng: np.random.Generator, family: str) -> Arch:
    """One architecture of ``family`` (MLP: 1-3 hidden layers; CNN: 2-3 3x3 convs, the first of stride 2, global
    pooling, 0-1 hidden layers; ResNet: a stride-2 stem and 1-2 basic blocks; transformer: a stride-2 stem of width 8
    or 16 and 1-2 blocks of 1, 2 or 4 heads)."""
    activation = str(rng.choice(["relu", "leaky_relu", "tanh", "gelu"]))
    if family == "transformer":
        width = int(rng.choice([8, 16]))
        heads = int(rng.choice([1, 2, 4]))
        ffn = tuple(int(rng.choice([16, 32])) for _ in range(int(rng.integers(1, 3))))
        return Arch("transformer", ffn, activation, (width,), (2,), heads)
    if family == "mlp":
        depth = int(rng.integers(1, 4))
        return Arch("mlp", tuple(int(rng.choice([16, 32, 64])) for _ in range(depth)), activation)
    if family == "resnet":
        blocks = int(rng.integers(1, 3))
        channels = tuple(int(rng.choice([8, 16])) for _ in range(blocks + 1))
        strides = (2, *(int(rng.choice([1, 2])) for _ in range(blocks)))
        return Arch("resnet", (), activation, channels, strides)
    depth = int(rng.integers(2, 4))
    channels = tuple(int(rng.choice([4, 8, 16])) for _ in range(depth))
    strides = (2, *(int(rng.choice([1, 2])) for _ in range(depth - 1)))
    widths = (int(rng.choice([16, 32])),) if rng.random() < 0.5 else ()
    return Arch("cnn", widths, activation, channels, strides)


def arch_pools(config: ZooConfig, rng: np.random.Generator) -> dict[str, list[Arch]]:
    """Distinct architectures per family, drawn once; every group draws its architecture from these."""
    pools: dict[str, list[Arch]] = {}
    for family, size in zip(FAMILIES, config.arch_pool, strict=True):
        pool: list[Arch] = []
        while len(pool) < size:
            arch = sample_arch(rng, family)
            if arch not in pool:
                pool.append(arch)
        pools[family] = pool
    return pools


def _run_id(task: str, family: str, hparams: dict, parent_id: str) -> str:
    key = json.dumps({"task": task, "family": family, "hparams": hparams, "parent": parent_id}, sort_keys=True)
    return "run-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def _snapshot_steps(config: ZooConfig, steps: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, round(f * steps)) for f in config.snapshots}))


def _interfaces(config: ZooConfig) -> list[tuple[str, str, list[TaskSpec]]]:
    """``(interface, family, tasks)`` for every interface and family that can train it, in a fixed order."""
    tasks = [t for t in list_tasks() if not config.tasks or t.name in config.tasks]
    out: dict[tuple[str, str], list[TaskSpec]] = {}
    for task in tasks:
        for family in task.families:
            out.setdefault((task.interface, family), []).append(task)
    return [(iface, fam, ts) for (iface, fam), ts in out.items()]


def plan_zoo(config: ZooConfig) -> list[GroupPlan]:
    """Deterministically sample every group (parents first, then their fine-tuned children)."""
    rng = np.random.default_rng(config.seed)
    pools = arch_pools(config, rng)
    lo, hi = np.log(config.lr_range[0]), np.log(config.lr_range[1])
    combos = _interfaces(config)
    weight = sum(len(ts) for _, _, ts in combos)
    total_groups = math.ceil(config.num_runs / config.group_size)
    groups: list[GroupPlan] = []

    def new_run(task: str, lr: float, wd: float, parent_id: str = "") -> RunPlan:
        return RunPlan(task, int(rng.integers(2**31)), lr, wd, parent_id)

    def finalise(group: GroupPlan) -> GroupPlan:
        for run in group.runs:
            run.run_id = _run_id(run.task, group.arch.family, group.hparams(run), run.parent_id)
        return group

    orders = {family: rng.permutation(len(pool)) for family, pool in pools.items()}
    used = dict.fromkeys(pools, 0)  # groups of each family planned so far
    for interface, family, tasks in combos:
        count = max(config.min_groups, round(total_groups * len(tasks) / weight)) if weight else 0
        pool, order = pools[family], orders[family]
        # round-robin over one order per family: every architecture serves as many interfaces as the next
        archs = [pool[order[(used[family] + j) % len(pool)]] for j in range(count)]
        used[family] += count
        size = min(config.group_size, config.runs_per_task * len(tasks))
        for arch in archs:
            steps = int(rng.choice(config.cnn_steps_choices if family in IMAGE_FAMILIES else config.steps_choices))
            group = GroupPlan(interface, arch, str(rng.choice(config.input_norms)), steps,
                              int(rng.choice(config.batch_choices)), _snapshot_steps(config, steps))  # fmt: skip
            order = [tasks[i].name for i in rng.permutation(len(tasks))]
            for i in range(size):
                lr = float(np.exp(rng.uniform(lo, hi)))
                group.runs.append(new_run(order[i % len(order)], lr, float(rng.choice(config.wd_choices))))
            groups.append(finalise(group))
    task_names = {(iface, fam): [t.name for t in ts] for iface, fam, ts in combos}
    for parent in list(groups):
        if rng.random() >= config.finetune_group_fraction:
            continue
        chosen = sorted(rng.choice(len(parent.runs), max(1, len(parent.runs) // 2), replace=False).tolist())
        steps = int(rng.choice(config.finetune_steps))
        child = GroupPlan(parent.interface, parent.arch, parent.input_norm, steps, parent.batch_size,
                          _snapshot_steps(config, steps))  # fmt: skip
        for i in chosen:
            p = parent.runs[i]
            lr = p.lr * float(10 ** rng.uniform(-0.5, 0.0))
            task = str(rng.choice(task_names[parent.interface, parent.arch.family]))
            child.runs.append(new_run(task, lr, p.weight_decay, p.model_id(parent.arch.family, parent.steps)))
        parent.children.append(len(groups))
        groups.append(finalise(child))
    return groups
