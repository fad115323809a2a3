"""Ray Tune sweep over the contrastive encoder's temperature, depth, width and learning rate, with ASHA.

Each trial is a function trainable running :func:`raywse.models.contrastive.train_contrastive` (the same epoch loop
as the Ray Train workers, with ``tune.report`` as its report) in-process on one CPU; on a 2-core laptop two trials
run at once. The graphs travel once through the object store (``tune.with_parameters``). ASHA stops trials whose
objective lags; the best trial's settings are written to ``best_config.json`` as nested
:class:`~raywse.train.trainer.TrainConfig` overrides, which ``raywse train --config-json`` (and the main job) apply.

The objective, ``val_query_mAP``, is the retrieval the index serves: each ``val`` model queries the ``train`` and
``val`` models (itself excluded) for models of its task. Leave-one-out retrieval within ``val`` alone (the
training loop's ``val_mAP``, also reported) is undefined when no two ``val`` models share a task, as in small zoos.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from raywse.core.artifacts import TuneFiles
from raywse.core.io import write_json_atomic
from raywse.core.ray_session import ensure_ray
from raywse.data.graphify import load_graphs
from raywse.data.labels import ZooLabels
from raywse.metrics import ranked_neighbours, retrieval_metrics
from raywse.models.contrastive import ContrastiveConfig, LabelledGraphs, train_contrastive
from raywse.models.encode import encode
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

OBJECTIVE = "val_query_mAP"


@dataclass
class TuneConfig:
    """Sweep size and ranges; defaults fit a 2-core laptop in a few minutes."""

    num_samples: int = field(default=8, metadata={"help": "trials"})
    max_epochs: int = field(default=6, metadata={"help": "epochs of the longest trial (ASHA max_t)"})
    grace_period: int = field(default=2, metadata={"help": "epochs before ASHA may stop a trial"})
    temperature_min: float = 0.03
    temperature_max: float = 0.5
    depths: tuple[int, ...] = (2, 3, 4)
    hiddens: tuple[int, ...] = (32, 64, 128)
    lr_min: float = 3e-4
    lr_max: float = 3e-3
    cpus_per_trial: float = 1.0
    seed: int = 0


def search_space(config: TuneConfig) -> dict:
    """Nested like the configs it overrides: ``{"contrastive": {...}, "encoder": {...}}``."""
    return {
        "contrastive": {
            "temperature": tune.loguniform(config.temperature_min, config.temperature_max),
            "lr": tune.loguniform(config.lr_min, config.lr_max),
        },
        "encoder": {"depth": tune.choice(list(config.depths)), "hidden": tune.choice(list(config.hiddens))},
    }


def query_retrieval(encoder: NeuralGraphEncoder, val: LabelledGraphs, train: LabelledGraphs) -> dict[str, float]:
    """``val_query_mAP`` / ``val_query_precision@10``: val models query train + val (self excluded) by task."""
    z = encode(encoder, val.graphs + train.graphs, batch_size=128).embeddings
    labels = np.concatenate([val.task, train.task])
    n = len(val)
    ranking = ranked_neighbours(z[:n], z, exclude_self=np.arange(n))
    metrics = retrieval_metrics(labels[:n], labels, ranking, ks=(10,))
    return {"val_query_mAP": metrics["mAP"], "val_query_precision@10": metrics["precision@10"]}


def tune_trial(
    trial: dict, train: LabelledGraphs, val: LabelledGraphs, contrastive: ContrastiveConfig, encoder: EncoderConfig,
    epochs: int,
) -> None:  # fmt: skip
    """One Tune trial: the base configs with the trial's values, reporting the objective every epoch."""
    torch.set_num_threads(1)
    contrastive = replace(contrastive, **trial["contrastive"])
    encoder_config = replace(encoder, **trial["encoder"], accuracy_head=contrastive.accuracy_weight > 0)
    torch.manual_seed(contrastive.seed)
    model = NeuralGraphEncoder(encoder_config)

    def report(metrics: dict, state: dict) -> None:
        tune.report(metrics | query_retrieval(model, val, train))

    train_contrastive(model, train, val, contrastive, epochs, report)


def run_sweep(
    zoo_dir: str | os.PathLike,
    graphs_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TuneConfig,
    contrastive: ContrastiveConfig | None = None,
    encoder: EncoderConfig | None = None,
) -> dict:
    """Run the sweep around the base configs; write and return the best trial's overrides (``best_config.json``)."""
    ensure_ray()
    out_dir = Path(out_dir).resolve()
    labels = ZooLabels.from_zoo(zoo_dir)
    train = labels.label(load_graphs(graphs_dir, labels.ids("train")), learned_only=True)
    val = labels.label(load_graphs(graphs_dir, labels.ids("val")))
    tasks = np.concatenate([train.task, val.task]).tolist()
    if not any(tasks.count(t) > 1 for t in val.task.tolist()):
        raise ValueError(
            f"cannot tune on {zoo_dir}: none of its {len(val)} val models shares a task with another train/val model"
        )
    contrastive = replace(contrastive or ContrastiveConfig(), seed=config.seed)
    trainable = tune.with_resources(
        tune.with_parameters(
            tune_trial, train=train, val=val, contrastive=contrastive, encoder=encoder or EncoderConfig(),
            epochs=config.max_epochs,
        ),
        {"cpu": config.cpus_per_trial},
    )  # fmt: skip
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(config),
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode="max",
            num_samples=config.num_samples,
            scheduler=ASHAScheduler(max_t=config.max_epochs, grace_period=config.grace_period),
        ),
        run_config=tune.RunConfig(name="sweep", storage_path=str(out_dir / TuneFiles.RAY_RESULTS), verbose=1),
    )
    results = tuner.fit()
    best = results.get_best_result(metric=OBJECTIVE, mode="max")
    summary = {
        "best": best.config,
        "objective": OBJECTIVE,
        "best_score": float(best.metrics[OBJECTIVE]),
        "trials": [
            {"config": r.config, OBJECTIVE: r.metrics.get(OBJECTIVE), "epochs": r.metrics.get("epoch", -1) + 1}
            for r in results
            if r.metrics
        ],
    }
    write_json_atomic(summary, out_dir / TuneFiles.BEST_CONFIG)
    return summary
