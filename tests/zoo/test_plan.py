"""The zoo plan keeps architecture independent of task: checked on the demo preset's plan (no training needed)."""

from __future__ import annotations

import numpy as np

from raywse.eval.suite import ranked_relevance
from raywse.eval.view import manifest_architecture
from raywse.metrics import relevance_metrics
from raywse.zoo.plan import ZooConfig, plan_zoo


def test_plan_is_deterministic_with_unique_ids():
    a, b = plan_zoo(ZooConfig.small()), plan_zoo(ZooConfig.small())
    ids = [m for g in a for r in g.runs for m in g.model_ids(r)]
    assert ids == [m for g in b for r in g.runs for m in g.model_ids(r)]
    assert len(ids) == len(set(ids)) and len(ids) >= 3000


def test_architecture_is_independent_of_task():
    """Every architecture serves >= 3 tasks; every (task, family) has >= 8 distinct architectures; optimiser
    settings, steps and batch sizes are drawn per group or run, not per task."""
    groups = plan_zoo(ZooConfig.small())
    tasks_of_arch: dict = {}
    archs_of_task: dict = {}
    for g in groups:
        for r in g.runs:
            tasks_of_arch.setdefault(g.arch, set()).add(r.task)
            archs_of_task.setdefault((r.task, g.arch.family), set()).add(g.arch)
    assert min(len(t) for t in tasks_of_arch.values()) >= 3
    assert min(len(a) for a in archs_of_task.values()) >= 8
    multi_task = [g for g in groups if len({r.task for r in g.runs}) > 1]
    assert len(multi_task) >= 0.9 * len(groups)


def test_arch_oracle_is_near_chance_on_the_demo_preset(demo_plan_rows):
    """Ranking same-architecture models first (random order inside, the evaluation's own architecture key and
    tie-break) retrieves same-task models at most 0.10 above a random ranking (P@10, the query's own run excluded)."""
    rows = demo_plan_rows
    keys = [manifest_architecture(r) for r in rows]
    codes = {k: i for i, k in enumerate(sorted(set(keys)))}
    onehot = np.zeros((len(rows), len(codes)), np.float32)
    onehot[np.arange(len(rows)), [codes[k] for k in keys]] = 1.0
    task = np.array([r["task"] for r in rows])
    run = np.array([r["run_id"] for r in rows])
    queries = np.arange(0, len(rows), 5)

    def same_task(q: int, idx: np.ndarray) -> np.ndarray:
        return task[idx] == task[q]

    oracle = ranked_relevance(onehot, queries, lambda q: run != run[q], same_task, seed=0)
    random = ranked_relevance(np.ones_like(onehot[:, :1]), queries, lambda q: run != run[q], same_task, seed=0)
    p_oracle = relevance_metrics(oracle, (10,))["precision@10"]
    p_random = relevance_metrics(random, (10,))["precision@10"]
    print(f"arch_oracle P@10 {p_oracle:.3f}, random ranking {p_random:.3f}")
    assert p_oracle <= p_random + 0.10
