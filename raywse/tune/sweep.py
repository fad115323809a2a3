"""Ray Tune sweep over the contrastive encoder's temperature, depth, width and learning rate, with ASHA.

Each trial is a function trainable that runs the same :class:`raywse.train.loop.ContrastiveLoop` as the Ray Train
workers, in-process on one CPU (on a 2-core laptop, two trials run at once). The graphs travel once through the
object store (``tune.with_parameters``). ASHA stops trials whose validation mAP lags; the best configuration is
written to ``best_config.json``, which ``raywse train --config-json`` (and the main job) picks up.

The objective, ``val_query_mAP``, is the retrieval the index serves: each ``val`` model queries the ``train`` and
``val`` models (itself excluded) for models of its task. Leave-one-out retrieval within ``val`` alone (the
training loop's ``val_mAP``, also reported) is undefined when no two ``val`` models share a task, as in small zoos.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from torch_geometric.data import Batch

from raywse.data.graphify import load_graphs
from raywse.eval.metrics import ranked_neighbours, retrieval_metrics
from raywse.io import write_json_atomic
from raywse.models.encoder import NeuralGraphEncoder
from raywse.raycluster import ensure_ray
from raywse.train.loop import ContrastiveLoop, EmbedAndPredict, validate
from raywse.train.trainer import TrainConfig, label_graphs, loop_config, zoo_labels

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
    return {
        "temperature": tune.loguniform(config.temperature_min, config.temperature_max),
        "depth": tune.choice(list(config.depths)),
        "hidden": tune.choice(list(config.hiddens)),
        "lr": tune.loguniform(config.lr_min, config.lr_max),
    }


@torch.no_grad()
def _embed(encoder: NeuralGraphEncoder, graphs: list, batch_size: int = 128) -> np.ndarray:
    encoder.eval()
    graphs = [encoder.prepare(g) for g in graphs]
    chunks = [encoder(Batch.from_data_list(graphs[i : i + batch_size])) for i in range(0, len(graphs), batch_size)]
    return torch.cat(chunks).numpy()


def query_retrieval(encoder: NeuralGraphEncoder, val_graphs: list, train_graphs: list) -> dict[str, float]:
    """``val_query_mAP`` / ``val_query_precision@10``: val models query train + val (self excluded) by task."""
    database = val_graphs + train_graphs
    z = _embed(encoder, database)
    labels = np.array([int(g.task_label) for g in database])
    n = len(val_graphs)
    ranking = ranked_neighbours(z[:n], z, exclude_self=np.arange(n))
    metrics = retrieval_metrics(labels[:n], labels, ranking, ks=(10,))
    return {"val_query_mAP": metrics["mAP"], "val_query_precision@10": metrics["precision@10"]}


def tune_trial(trial: dict, train_graphs: list, val_graphs: list, base: dict) -> None:
    """One Tune trial: the base training config with the trial's values, reporting the objective every epoch."""
    torch.set_num_threads(1)
    config = TrainConfig(**(base | trial))
    torch.manual_seed(config.seed)
    encoder = NeuralGraphEncoder(config.encoder_config())
    opt = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loop = ContrastiveLoop(loop_config(asdict(config)), train_graphs, encoder, EmbedAndPredict(encoder), opt, "cpu")
    for epoch in range(config.epochs):
        metrics = loop.train_epoch(epoch) | validate(encoder, val_graphs, "cpu")
        tune.report(metrics | query_retrieval(encoder, val_graphs, train_graphs) | {"epoch": epoch})


def run_sweep(
    zoo_dir: str | os.PathLike,
    graphs_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TuneConfig,
    base: TrainConfig | None = None,
) -> dict:
    """Run the sweep; write and return the best trial's training overrides (``best_config.json``)."""
    ensure_ray()
    out_dir = Path(out_dir).resolve()
    labels, splits = zoo_labels(zoo_dir)
    graphs = label_graphs(load_graphs(graphs_dir, [m for m in labels if splits[m] in ("train", "val")]), labels)
    train = [g for g in graphs if splits[g.model_id] == "train"]
    val = [g for g in graphs if splits[g.model_id] == "val"]
    tasks = [int(g.task_label) for g in train + val]
    if not any(tasks.count(int(g.task_label)) > 1 for g in val):
        raise ValueError(
            f"cannot tune on {zoo_dir}: none of its {len(val)} val models shares a task with another train/val model"
        )
    base_dict = asdict(base or TrainConfig()) | {"epochs": config.max_epochs, "seed": config.seed}
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, train_graphs=train, val_graphs=val, base=base_dict),
        {"cpu": config.cpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(config),
        tune_config=tune.TuneConfig(
            metric=OBJECTIVE,
            mode="max",
            num_samples=config.num_samples,
            scheduler=ASHAScheduler(max_t=config.max_epochs, grace_period=config.grace_period),
        ),
        run_config=tune.RunConfig(name="sweep", storage_path=str(out_dir / "ray_results"), verbose=1),
    )
    results = tuner.fit()
    best = results.get_best_result(metric=OBJECTIVE, mode="max")
    summary = {
        "best": {k: best.config[k] for k in search_space(config)},
        "objective": OBJECTIVE,
        "best_score": float(best.metrics[OBJECTIVE]),
        "trials": [
            {
                "config": {k: r.config[k] for k in search_space(config)},
                OBJECTIVE: r.metrics.get(OBJECTIVE),
                "epochs": r.metrics.get("epoch", -1) + 1,
            }  # fmt: skip
            for r in results
            if r.metrics
        ],
    }
    write_json_atomic(summary, out_dir / "best_config.json")
    return summary
