"""DDP contrastive training of the neural-graph encoder on Ray Train.

The driver builds Ray Datasets from the graph shards ("train" is sharded across workers, "val" is not) and runs a
``TorchTrainer``. Each worker materialises its shard once, then per epoch draws positive pairs: two augmented views
(rescaling, weight noise, edge dropout) of either the same model or, with probability ``same_task_prob``, of
another model trained on the same task (the weak supervision of the seeds). Loss: NT-Xent with in-batch negatives
(or supervised contrastive), plus an optional accuracy-prediction term. Rank 0 writes a checkpoint every epoch;
re-running with the same ``out_dir`` and ``run_name`` resumes from the latest one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pyarrow.parquet as pq
import ray
import ray.train
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from raywse.data.graphify import shard_paths
from raywse.data.splits import assign_splits
from raywse.graph.arrow import row_to_graph
from raywse.io import atomic_path, write_json_atomic
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder
from raywse.raycluster import ensure_ray
from raywse.train.loop import ContrastiveLoop, EmbedAndPredict, LoopConfig, validate

ENCODER_FILE = "encoder.pt"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"


@dataclass
class TrainConfig:
    """Contrastive training; defaults train in minutes on a 2-core laptop."""

    epochs: int = field(default=8, metadata={"help": "passes over the training graphs"})
    batch_size: int = field(default=32, metadata={"help": "pairs per worker step (in-batch negatives)"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = 1e-4
    temperature: float = field(default=0.1, metadata={"help": "NT-Xent temperature tau"})
    same_task_prob: float = field(default=0.5, metadata={"help": "chance a positive is another model of the task"})
    supervised: bool = field(default=False, metadata={"help": "supervised contrastive loss (same task = positive)"})
    accuracy_weight: float = field(default=0.5, metadata={"help": "lambda of the accuracy-prediction loss (0: off)"})
    noise: float = field(default=0.05, metadata={"help": "weight noise, in units of each layer's weight std"})
    edge_drop: float = field(default=0.1, metadata={"help": "edge dropout probability of a view"})
    depth: int = field(default=4, metadata={"help": "message-passing layers"})
    hidden: int = field(default=64, metadata={"help": "hidden width of the encoder"})
    edge_hidden: int = field(default=16, metadata={"help": "width of edge states (per-edge cost dominates)"})
    fourier_features: int = field(default=4, metadata={"help": "random Fourier features per scalar weight"})
    embed_dim: int = 64
    num_workers: int = field(default=2, metadata={"help": "Ray Train workers (DDP ranks)"})
    use_gpu: bool = field(default=False, metadata={"help": "one GPU per worker, NCCL backend"})
    seed: int = 0
    run_name: str = field(default="encoder", metadata={"help": "Ray Train run name (same name + out dir = resume)"})

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(
            depth=self.depth,
            hidden=self.hidden,
            edge_hidden=self.edge_hidden,
            fourier_features=self.fourier_features,
            embed_dim=self.embed_dim,
            accuracy_head=self.accuracy_weight > 0,
        )


@dataclass
class TrainResult:
    encoder_dir: Path
    metrics: list[dict]  # one dict per epoch, all epochs of the run (including those before a resume)


def zoo_labels(zoo_dir: str | os.PathLike) -> tuple[dict[str, tuple[int, float]], dict[str, str]]:
    """``model_id -> (task index, test accuracy)`` and ``model_id -> split`` for a zoo."""
    path = Path(zoo_dir) / "manifest.parquet"
    if not path.exists():
        raise FileNotFoundError(f"no zoo manifest at {path} (build one with `raywse zoo --out {zoo_dir}`)")
    manifest = pq.read_table(path).to_pylist()
    tasks = sorted({r["task"] for r in manifest})
    labels = {r["model_id"]: (tasks.index(r["task"]), float(r["test_acc"])) for r in manifest}
    return labels, assign_splits(manifest)


def label_graphs(graphs: list, labels: dict[str, tuple[int, float]]) -> list:
    """Attach ``task_label`` and ``accuracy`` to graphs (what the contrastive loop reads)."""
    for g in graphs:
        g.task_label, g.accuracy = labels[g.model_id]
    return graphs


def loop_config(config: dict) -> LoopConfig:
    return LoopConfig(**{f.name: config[f.name] for f in fields(LoopConfig)})


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker loop (one DDP rank): materialise the shard once, then epochs with a checkpoint each."""
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(config["seed"])
    shard_graphs = [row_to_graph(row) for row in ray.train.get_dataset_shard("train").iter_rows()]
    train = label_graphs(shard_graphs, config["labels"])
    val = label_graphs([row_to_graph(row) for row in ray.train.get_dataset_shard("val").iter_rows()], config["labels"])

    encoder = NeuralGraphEncoder(EncoderConfig(**config["encoder"]))
    model = ray.train.torch.prepare_model(EmbedAndPredict(encoder))
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / "state.pt", map_location=device, weights_only=True)
            history = json.loads((Path(ckpt_dir) / HISTORY_FILE).read_text())
        encoder.load_state_dict(state["encoder"])
        opt.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1

    loop = ContrastiveLoop(loop_config(config), train, encoder, model, opt, device, rank)
    for epoch in range(start_epoch, config["epochs"]):
        metrics = loop.train_epoch(epoch) | validate(encoder, val, device)
        metrics |= {"epoch": epoch, "finished_at": time.time()}
        history.append(metrics)
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                state = {"encoder": encoder.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}
                torch.save(state, Path(tmp) / "state.pt")
                (Path(tmp) / CONFIG_FILE).write_text(json.dumps(config["encoder"]))
                (Path(tmp) / HISTORY_FILE).write_text(json.dumps(history))  # every epoch, across resumes
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)


def train_encoder(
    zoo_dir: str | os.PathLike, graphs_dir: str | os.PathLike, out_dir: str | os.PathLike, config: TrainConfig
) -> TrainResult:
    """Train on the zoo's ``train`` split with Ray Train; write ``out_dir/encoder/{encoder.pt,config.json}``."""
    ensure_ray()
    out_dir = Path(out_dir).resolve()
    labels, splits = zoo_labels(zoo_dir)
    train_ids = {m for m, s in splits.items() if s == "train"}
    val_ids = {m for m, s in splits.items() if s == "val"}
    graphs = ray.data.read_parquet(shard_paths(graphs_dir))
    # Materialised up front: the training workers may hold every CPU, leaving none for Ray Data to run the filter.
    datasets = {
        "train": graphs.filter(lambda row: row["model_id"] in train_ids).materialize(),
        "val": graphs.filter(lambda row: row["model_id"] in val_ids).materialize(),
    }
    loop_config = asdict(config) | {"encoder": asdict(config.encoder_config()), "labels": labels}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(
            name=config.run_name,
            storage_path=str(out_dir / "ray_results"),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    encoder_dir = out_dir / "encoder"
    with result.checkpoint.as_directory() as ckpt_dir:
        state = torch.load(Path(ckpt_dir) / "state.pt", map_location="cpu", weights_only=True)
        export_encoder(state["encoder"], json.loads((Path(ckpt_dir) / CONFIG_FILE).read_text()), encoder_dir)
        history = json.loads((Path(ckpt_dir) / HISTORY_FILE).read_text())
    write_json_atomic(history, out_dir / "train_metrics.json")
    return TrainResult(encoder_dir, history)


def export_encoder(state_dict: dict, encoder_config: dict, encoder_dir: Path) -> str:
    """Write the final encoder (state dict + config + content version) atomically; returns the version."""
    encoder_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(encoder_dir / ENCODER_FILE) as tmp:
        torch.save(state_dict, tmp)
    version = _file_digest(encoder_dir / ENCODER_FILE)
    write_json_atomic({"encoder": encoder_config, "version": version}, encoder_dir / CONFIG_FILE)
    return version


def load_encoder(encoder_dir: str | os.PathLike) -> tuple[NeuralGraphEncoder, str]:
    """Load an exported encoder in eval mode; returns ``(encoder, version)``."""
    encoder_dir = Path(encoder_dir)
    if not (encoder_dir / CONFIG_FILE).exists():
        raise FileNotFoundError(f"no trained encoder in {encoder_dir} (expected {CONFIG_FILE} and {ENCODER_FILE})")
    meta = json.loads((encoder_dir / CONFIG_FILE).read_text())
    if _file_digest(encoder_dir / ENCODER_FILE) != meta["version"]:
        raise ValueError(f"{encoder_dir}: {ENCODER_FILE} does not match the version in {CONFIG_FILE} (partial export)")
    encoder = NeuralGraphEncoder(EncoderConfig(**meta["encoder"]))
    encoder.load_state_dict(torch.load(encoder_dir / ENCODER_FILE, map_location="cpu", weights_only=True))
    return encoder.eval(), meta["version"]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
