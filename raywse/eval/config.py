"""What an evaluation runs: :class:`EvalConfig`, the name of the encoder under test and the split names it reports."""

from __future__ import annotations

from dataclasses import dataclass, field

from raywse.data.splits import UNSEEN_TASKS
from raywse.models.baselines import BASELINES, NonEquivariantGNNEmbedder

#: The trained encoder's name among the embedders (every other embedder is a baseline).
RAYWSE = "raywse"
#: Held-out query splits (from :func:`raywse.data.splits.assign_splits`), in report order.
HELD_OUT = ("test_seed", "test_hparam", "test_family", "test_lineage", "test_task")
#: Held-out splits pooled into the task-retrieval settings (``held_out``, ``cross_arch``, ...): lineage children are
#: scored on their own, never pooled with the others (their parents sit in the database).
POOLED = ("test_seed", "test_hparam", "test_family", "test_task")
#: The training-free functional reference row (runs each checkpoint on probe inputs; built by the evaluation, as it
#: reads checkpoints and datasets rather than graphs).
PROBE_OUTPUTS = "probe_outputs"
#: Every embedder the evaluation can compare with raywse, in report order: the reference rows first.
EVAL_BASELINES = (*BASELINES[:3], PROBE_OUTPUTS, *BASELINES[3:])
#: The trained GNN baseline; trained as raywse was (Ray Train, its run's config) when that run saved its config.
GNN_NONEQUIVARIANT = NonEquivariantGNNEmbedder.name
#: Hard retrieval settings, in report order.
HARD = ("cross_family", "label_map", "lineage")


@dataclass
class EvalConfig:
    """What to evaluate; defaults run in about a minute on a 2-core laptop for a small zoo."""

    baselines: tuple[str, ...] = EVAL_BASELINES
    baseline_train_steps: int = field(default=100, metadata={"help": "contrastive steps of the flat-MLP baseline"})
    gnn_baseline_steps: int = field(
        default=40,
        metadata={"help": "contrastive steps of the non-equivariant GNN, fitted in one process when raywse's training "
                  "run saved no config (else it is trained as raywse was, on Ray Train)"},
    )  # fmt: skip
    remote_fits: tuple[str, ...] = field(
        default=("gnn_nonequivariant", "flat_mlp"),
        metadata={"help": "baselines fitted in Ray tasks (remote_fit_cpus each) while the rest of the evaluation runs "
                  "(not one trained on Ray Train: that runs first)"},
    )  # fmt: skip
    remote_fit_cpus: int = field(
        default=1,
        metadata={"help": "CPUs, and torch threads, of each remote fit (at most the cluster's; fits that cannot "
                  "share the CPUs run one after another). One: Ray workers run at niceness 15, so a second thread "
                  "waits on a core the evaluation's own process (niceness 0) is using"},
    )  # fmt: skip
    torch_threads: int = field(default=1, metadata={"help": "intra-op threads (1 is fastest for tiny nets)"})
    ks: tuple[int, ...] = (1, 5, 10)
    curve_k: int = 20
    finetune_tasks: tuple[str, ...] = UNSEEN_TASKS  # tasks the encoder never trained on
    finetune_queries: int = field(default=5, metadata={"help": "held-out models of each task used as queries"})
    finetune_embedders: tuple[str, ...] = (RAYWSE, "input_saliency")
    finetune_steps: int = 300
    finetune_eval_every: int = 10
    finetune_lr: float = 1e-3
    finetune_batch_size: int = 64
    finetune_repeats: int = 1  # random compatible models and scratch inits per query
    target_fraction: float = 0.9  # target = this share of the task's median zoo test accuracy ...
    target_margin: float = 0.1  # ... but at least the majority-class test accuracy plus this margin
    seed: int = 0  # also draws the tie-break order of every ranking
    foreign_dir: str = field(default="", metadata={"help": "a foreign zoo (foreign/train_foreign.py) to score too"})

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in EVAL_BASELINES]
        if unknown:
            raise ValueError(f"unknown baselines {unknown} (choose from {', '.join(EVAL_BASELINES)})")
        unknown = [b for b in self.remote_fits if b not in EVAL_BASELINES]
        if unknown:
            raise ValueError(f"unknown remote_fits {unknown} (choose from {', '.join(EVAL_BASELINES)})")
        if set(self.remote_fits) & set(self.finetune_embedders):
            raise ValueError("finetune_embedders cannot be remote_fits (fine-tuning runs while the remote fits do)")
        if self.remote_fit_cpus < 1:
            raise ValueError(f"remote_fit_cpus must be at least 1, got {self.remote_fit_cpus}")
        if not {1, 10} <= set(self.ks):
            raise ValueError(f"ks must include 1 and 10 (the summary's precision@1 and precision@10), got {self.ks}")
