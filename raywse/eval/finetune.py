"""The fine-tuning-steps-saved experiment: how many steps a retrieved zoo model needs to reach a target accuracy on
an unseen task (one the encoder never trained on, :data:`raywse.data.splits.UNSEEN_TASKS`), against random compatible
zoo models and fresh initialisations, over several query models per task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raywse.core.forward import spec_module
from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.eval.config import EvalConfig
from raywse.eval.suite import rank
from raywse.eval.view import ZooView
from raywse.metrics import normalize
from raywse.zoo.datasets import TaskData, load_task


def _fresh(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return module


def steps_to_target(
    model: torch.nn.Module, spec: ArchSpec, data: TaskData, target: float, config: EvalConfig, seed: int
):
    """Fine-tune with Adam on minibatches; returns (steps to reach ``target`` test accuracy or the budget, reached,
    accuracy before training, final accuracy). Accuracy is checked before training and every few steps."""
    x_tr = data.x_train.view(-1, *spec.input_shape)
    x_te = data.x_test.view(-1, *spec.input_shape)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.finetune_lr)
    acc = start_acc = 0.0
    for step in range(config.finetune_steps + 1):
        if step % config.finetune_eval_every == 0 or step == config.finetune_steps:
            with torch.no_grad():
                acc = float((model(x_te).argmax(-1) == data.y_test).float().mean())
            start_acc = acc if step == 0 else start_acc
            if acc >= target:
                return step, True, start_acc, acc
        if step == config.finetune_steps:
            break
        idx = torch.randint(len(x_tr), (config.finetune_batch_size,), generator=gen)
        loss = F.cross_entropy(model(x_tr[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return config.finetune_steps, False, start_acc, acc


def _compatible(row: dict, data: TaskData) -> bool:
    """Whether a zoo model can be fine-tuned on ``data`` as is: same input shape and output count."""
    if row["task"] == data.name or row["num_classes"] != data.num_classes:
        return False
    try:
        shape = data.input_shape_for(row["family"])
    except ValueError:
        return False
    spec = ArchSpec.from_json(row["layer_spec"])
    if any(layer.kind in ("add", "batchnorm") for layer in spec.layers):  # spec_module builds plain chains only
        return False
    return tuple(spec.input_shape) == tuple(shape)


def _finetune_run(
    zoo_dir: Path, row: dict, data: TaskData, target: float, config: EvalConfig, seed: int, scratch: bool
) -> dict:
    spec = ArchSpec.from_json(row["layer_spec"])
    data = load_task(data.name, row.get("input_norm") or "unit")  # the inputs as this model was trained to read them
    tensors = load_checkpoint(zoo_dir / row["path"])[0]
    model = spec_module(spec, {k: v.float() for k, v in tensors.items()})
    if scratch:
        model = _fresh(model, seed)
    steps, reached, start, acc = steps_to_target(model, spec, data, target, config, seed)
    return {
        "model": row["model_id"],
        "task": row["task"],
        "family": row["family"],
        "steps": steps,
        "reached": reached,
        "start_acc": start,
        "final_acc": acc,
    }


def _summary(runs: list[dict]) -> dict[str, float]:
    steps = np.array([r["steps"] for r in runs], dtype=float)
    half = 1.96 * steps.std(ddof=1) / np.sqrt(len(steps)) if len(steps) > 1 else float("nan")
    return {
        "runs": len(runs),
        "mean_steps": float(steps.mean()),
        "ci95": float(half),  # normal-approximation half-width over runs
        "censored": int(sum(not r["reached"] for r in runs)),
        "reached": float(np.mean([r["reached"] for r in runs])),
        "mean_start_acc": float(np.mean([r["start_acc"] for r in runs])),
        "mean_final_acc": float(np.mean([r["final_acc"] for r in runs])),
    }


def finetune_task(
    task: str, zoo_dir: Path, rows: list[dict], view: ZooView, embeddings: dict[str, np.ndarray], config: EvalConfig
) -> dict:
    """Steps to a target accuracy on ``task`` from retrieved models, from random compatible models and from scratch,
    for up to ``config.finetune_queries`` held-out models of the task as queries."""
    own = np.flatnonzero((view.task == task) & view.learned)
    if len(own) == 0:
        return {"skipped": "no learned model of this task in the zoo"}
    data = load_task(task)
    by_id = {r["model_id"]: r for r in rows}
    compatible = np.array([_compatible(by_id[m], data) for m in view.ids], dtype=bool)
    if not compatible.any():
        return {"skipped": "no compatible model of another task"}
    rng = np.random.default_rng(config.seed)
    held = own[view.held_out[own] & (view.parent[own] == "")]  # queries without a parent: no lineage shortcut
    candidates = held if len(held) else own
    _, first = np.unique(view.run[candidates], return_index=True)  # one query per training run
    candidates = candidates[np.sort(first)]
    queries = rng.choice(candidates, size=min(config.finetune_queries, len(candidates)), replace=False)
    majority = float(torch.bincount(data.y_test).max()) / len(data.y_test)
    target = max(config.target_fraction * float(np.median(view.test_acc[own])), majority + config.target_margin)

    def run(i: int, seed: int, scratch: bool = False) -> dict:
        return _finetune_run(zoo_dir, by_id[view.ids[i]], data, target, config, seed, scratch)

    arms: dict[str, list[dict]] = {}
    for qi, query in enumerate(queries):
        pool = np.flatnonzero(compatible & view.unrelated(int(query)))  # never the query's own lineage
        if len(pool) == 0:
            continue
        seed = config.seed + 1000 * qi  # each query's runs draw their own minibatches and inits
        picks = []
        for name in config.finetune_embedders:
            if name in embeddings:
                z = normalize(embeddings[name])
                picks.append(int(rank(z, int(query), pool, config.seed)[0]))  # exact ties broken at random (seeded)
                arms.setdefault(f"retrieved:{name}", []).append(run(picks[-1], seed))
        randoms = rng.choice(pool, size=min(config.finetune_repeats, len(pool)), replace=False)
        arms.setdefault("random", []).extend(run(int(i), seed) for i in randoms)
        base = picks[0] if picks else int(randoms[0])
        arms.setdefault("scratch", []).extend(run(base, seed + r, scratch=True) for r in range(config.finetune_repeats))
    if not arms:
        return {"skipped": "no compatible model outside the queries' lineage"}
    return {
        "target_acc": target,
        "majority_acc": majority,
        "queries": [view.ids[q] for q in queries],
        "candidates": int(compatible.sum()),
        "arms": arms,
        "summary": {arm: _summary(runs) for arm, runs in arms.items()},
    }


def finetune_overall(results: dict[str, dict]) -> dict[str, dict]:
    """Every arm over all tasks and queries: mean steps with a 95% interval, censored runs counted."""
    runs: dict[str, list[dict]] = {}
    for res in results.values():
        for arm, arm_runs in res.get("arms", {}).items():
            runs.setdefault(arm, []).extend(arm_runs)
    return {arm: _summary(r) for arm, r in runs.items()}
