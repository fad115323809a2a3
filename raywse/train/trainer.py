"""DDP contrastive training of the neural-graph encoder on Ray Train.

The driver builds Ray Datasets from the graph shards ("train" is sharded across workers, "val" is not) and runs a
``TorchTrainer``; each worker materialises its shard once and runs :func:`raywse.models.contrastive.train_contrastive`
with ``prepare_model`` as its wrapper and a ``report`` that writes a checkpoint on rank 0. Re-running with the same
``out_dir`` and ``run_name`` resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import ray
import ray.train
import torch
from ray.data.expressions import col
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raywse.core.artifacts import EncoderFiles
from raywse.core.config import ConfigError, apply_overrides
from raywse.core.io import write_json_atomic
from raywse.core.ray_session import cluster_gpus, ensure_ray, local_ray
from raywse.data.graphify import shard_paths
from raywse.data.labels import ZooLabels
from raywse.graph.arrow import row_to_graph
from raywse.models.checkpoint import build_encoder, export_encoder
from raywse.models.contrastive import ContrastiveConfig, train_contrastive
from raywse.models.embedder import RunTrainer
from raywse.models.encoder import EncoderConfig


@dataclass
class TrainConfig:
    """Contrastive training on Ray Train; defaults train in minutes on a 2-core laptop."""

    epochs: int = field(default=8, metadata={"help": "passes over the training graphs"})
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_workers: int = field(default=2, metadata={"help": "Ray Train workers (DDP ranks)"})
    use_gpu: bool | None = field(
        default=None,
        metadata={
            "help": "one GPU per worker, NCCL backend; unset: the GPUs Ray sees, if any, at most one worker per GPU"
        },
    )
    run_name: str = field(default="encoder", metadata={"help": "Ray Train run name (same name + out dir = resume)"})

    def encoder_config(self) -> EncoderConfig:
        """The encoder to train: with an accuracy head exactly when the accuracy loss is on."""
        return replace(self.encoder, accuracy_head=self.contrastive.accuracy_weight > 0)


@dataclass
class TrainResult:
    encoder_dir: Path
    metrics: list[dict]  # one dict per epoch, all epochs of the run (including those before a resume)
    config: TrainConfig  # what ran: where the workers trained settled (:func:`place_workers`)


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker (one DDP rank): read the shards, then :func:`train_contrastive` with checkpointing."""
    train_config: TrainConfig = config["train"]
    labels: ZooLabels = config["labels"]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(train_config.contrastive.seed)
    train = labels.label([row_to_graph(row) for row in ray.train.get_dataset_shard("train").iter_rows()], True)
    val = labels.label([row_to_graph(row) for row in ray.train.get_dataset_shard("val").iter_rows()])
    encoder_config = train_config.encoder_config()
    encoder = build_encoder(encoder_config)

    resume, history = None, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            resume = torch.load(Path(ckpt_dir) / EncoderFiles.STATE, map_location=device, weights_only=True)
            history = json.loads((Path(ckpt_dir) / EncoderFiles.HISTORY).read_text())

    def report(metrics: dict, state: dict) -> None:
        metrics = metrics | {"finished_at": time.time(), "device": device.type}
        history.append(metrics)
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / EncoderFiles.STATE)
            (Path(tmp) / EncoderFiles.CONFIG).write_text(json.dumps(asdict(encoder_config)))
            (Path(tmp) / EncoderFiles.HISTORY).write_text(json.dumps(history))  # every epoch, across resumes
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    train_contrastive(
        encoder, train, val, train_config.contrastive, train_config.epochs, report,
        wrap=ray.train.torch.prepare_model, device=device, rank=rank, resume=resume,
    )  # fmt: skip


def train_encoder(
    zoo_dir: str | os.PathLike, graphs_dir: str | os.PathLike, out_dir: str | os.PathLike, config: TrainConfig
) -> TrainResult:
    """Train on the zoo's ``train`` split with Ray Train; export the encoder to ``out_dir/encoder/``."""
    ensure_ray()
    config = place_workers(config)
    out_dir = Path(out_dir).resolve()
    labels = ZooLabels.from_zoo(zoo_dir)
    train_ids, val_ids = set(labels.ids("train")), set(labels.ids("val"))
    # Read once for both splits (Ray Data's read costs ~6 s on the demo's shards, its filter ~1 s), and materialised up
    # front: the training workers may hold every CPU, leaving none for Ray Data to run the filter.
    graphs = ray.data.read_parquet(shard_paths(graphs_dir)).materialize()
    datasets = {
        "train": graphs.filter(expr=col("model_id").is_in(sorted(train_ids))).materialize(),
        "val": graphs.filter(expr=col("model_id").is_in(sorted(val_ids))).materialize(),
    }
    del graphs  # the splits are materialised: the whole read need not stay in the object store while training
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": config, "labels": labels},
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=str(out_dir / EncoderFiles.RAY_RESULTS),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    encoder_dir = out_dir / EncoderFiles.DIR
    with result.checkpoint.as_directory() as ckpt_dir:
        state = torch.load(Path(ckpt_dir) / EncoderFiles.STATE, map_location="cpu", weights_only=True)
        export_encoder(state["encoder"], config.encoder_config(), encoder_dir)
        history = json.loads((Path(ckpt_dir) / EncoderFiles.HISTORY).read_text())
    write_json_atomic(history, out_dir / EncoderFiles.TRAIN_METRICS)
    write_json_atomic(asdict(config), out_dir / EncoderFiles.TRAIN_CONFIG)
    return TrainResult(encoder_dir, history, config)


def place_workers(config: TrainConfig) -> TrainConfig:
    """Settle where the workers run: ``use_gpu=None`` trains on the GPUs Ray sees now, at most one worker per GPU
    (a cluster that would add GPU machines only does so for an explicit ``use_gpu=True``), else on CPUs; an explicit
    GPU run asking a local Ray for more workers than it has GPUs would wait forever, so it is refused in one line."""
    gpus = cluster_gpus()
    if config.use_gpu is None:
        if not gpus:
            return replace(config, use_gpu=False)
        return replace(config, use_gpu=True, num_workers=min(config.num_workers, gpus))
    if config.use_gpu and config.num_workers > gpus and local_ray():
        fix = f"set --train.num-workers {gpus}" if gpus else "leave --train.use-gpu off"
        raise ConfigError(f"train.use_gpu: {config.num_workers} workers need one GPU each, Ray sees {gpus}; {fix}")
    return config


def saved_train_config(out_dir: str | os.PathLike) -> TrainConfig | None:
    """The :class:`TrainConfig` the run in ``out_dir`` was trained with (None if it saved none: an older run)."""
    path = Path(out_dir) / EncoderFiles.TRAIN_CONFIG
    if not path.is_file():
        return None
    return apply_overrides(TrainConfig(), json.loads(path.read_text()), f"{path}: ")


def train_as(
    run_dir: str | os.PathLike, zoo_dir: str | os.PathLike, graphs_dir: str | os.PathLike
) -> RunTrainer | None:
    """A function that trains an encoder of a given config as the run in ``run_dir`` was trained (its saved
    :class:`TrainConfig`: epochs, batches, loss, DDP ranks, on Ray Train over the same graph shards), its views also
    permuting hidden neurons (what a non-equivariant encoder needs to learn what an equivariant one has built in), in
    the ``out_dir`` it is given (emptied first: a rerun trains afresh); None when that run saved no config (an older
    run)."""
    base = saved_train_config(run_dir)
    if base is None:
        return None

    def train(encoder: EncoderConfig, out_dir: Path) -> tuple[dict, list[dict]]:
        # where the run trained on GPUs, the baseline takes the GPUs of the machine it trains on, if any
        contrastive = replace(base.contrastive, permute_views=True)
        config = replace(base, encoder=encoder, contrastive=contrastive, use_gpu=None if base.use_gpu else False)
        shutil.rmtree(out_dir, ignore_errors=True)
        result = train_encoder(zoo_dir, graphs_dir, out_dir, config)
        state = torch.load(result.encoder_dir / EncoderFiles.WEIGHTS, map_location="cpu", weights_only=True)
        return state, result.metrics

    return train


def trained_rank_steps(out_dir: str | os.PathLike) -> int:
    """Optimiser steps summed over DDP ranks of the run in ``out_dir`` (0 if it wrote no metrics): the budget the
    evaluation gives the trained baselines."""
    path = Path(out_dir) / EncoderFiles.TRAIN_METRICS
    history = json.loads(path.read_text()) if path.is_file() else []
    return int(history[-1].get("rank_steps", 0)) if history else 0
