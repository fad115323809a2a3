"""The fine-tuning-steps-saved experiment: how many steps a retrieved zoo model needs to reach a target accuracy on
an unseen task, against random compatible zoo models and fresh initialisations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec, spec_module
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
    return tuple(ArchSpec.from_json(row["layer_spec"]).input_shape) == tuple(shape)


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
    return {
        "mean_steps": float(np.mean([r["steps"] for r in runs])),
        "reached": float(np.mean([r["reached"] for r in runs])),
        "mean_start_acc": float(np.mean([r["start_acc"] for r in runs])),
        "mean_final_acc": float(np.mean([r["final_acc"] for r in runs])),
    }


def finetune_task(
    task: str, zoo_dir: Path, rows: list[dict], view: ZooView, embeddings: dict[str, np.ndarray], config: EvalConfig
) -> dict:
    """Steps to a target accuracy from a retrieved model, from random compatible models and from scratch."""
    own = np.flatnonzero(view.task == task)
    if len(own) == 0:
        return {"skipped": "no models of this task in the zoo"}
    data = load_task(task)
    by_id = {r["model_id"]: r for r in rows}
    pool = np.array([i for i, m in enumerate(view.ids) if _compatible(by_id[m], data)], dtype=np.int64)
    if len(pool) == 0:
        return {"skipped": "no compatible model of another task"}
    rng = np.random.default_rng(config.seed)
    held = own[view.held_out[own]]
    query = int(rng.choice(held if len(held) else own))
    majority = float(torch.bincount(data.y_test).max()) / len(data.y_test)
    target = max(config.target_fraction * float(np.median(view.test_acc[own])), majority + config.target_margin)

    def run(i: int, seed: int, scratch: bool = False) -> dict:
        return _finetune_run(zoo_dir, by_id[view.ids[i]], data, target, config, seed, scratch)

    arms: dict[str, list[dict]] = {}
    picks = []
    for name in config.finetune_embedders:
        if name in embeddings:
            z = normalize(embeddings[name])
            picks.append(int(rank(z, query, pool, config.seed)[0]))  # exact ties broken at random (seeded)
            arms[f"retrieved:{name}"] = [run(picks[-1], config.seed)]
    randoms = rng.choice(pool, size=min(config.finetune_repeats, len(pool)), replace=False)
    arms["random"] = [run(int(i), config.seed) for i in randoms]
    base = picks[0] if picks else int(randoms[0])
    arms["scratch"] = [run(base, config.seed + r, scratch=True) for r in range(config.finetune_repeats)]
    return {
        "target_acc": target,
        "majority_acc": majority,
        "query": view.ids[query],
        "query_family": str(view.family[query]),
        "candidates": len(pool),
        "arms": arms,
        "summary": {arm: _summary(runs) for arm, runs in arms.items()},
    }
