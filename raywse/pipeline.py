"""The main job: zoo -> graphs -> (tune) -> train -> index -> evaluation report, on a local Ray or a cluster."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from raywse.config import apply_json_overrides
from raywse.data.graphify import GraphifyConfig, graphify
from raywse.eval.report import EvalConfig, evaluate
from raywse.index.embed import build_index_job
from raywse.index.faiss_index import IndexConfig
from raywse.raycluster import ensure_ray
from raywse.train.trainer import ENCODER_FILE, TrainConfig, train_encoder
from raywse.tune.sweep import TuneConfig, run_sweep
from raywse.zoo.build import ZooConfig, build_zoo


@dataclass
class PipelineConfig:
    """Where the run writes, and how big it is; laptop-sized by default."""

    out_dir: str = field(default="runs/demo", metadata={"help": "directory for every artifact of the run"})
    zoo_preset: str = field(default="small", metadata={"help": "zoo size: tiny | small | bench"})
    epochs: int = field(default=TrainConfig.epochs, metadata={"help": "encoder training epochs"})
    num_workers: int = field(default=TrainConfig.num_workers, metadata={"help": "Ray Train workers"})
    use_gpu: bool = field(default=False, metadata={"help": "train and embed on GPUs"})
    tune: bool = field(default=False, metadata={"help": "run a Tune sweep first and train with its best config"})
    tune_samples: int = field(default=TuneConfig.num_samples, metadata={"help": "Tune trials (with --tune)"})
    num_cpus: int | None = field(default=None, metadata={"help": "CPUs for the local Ray (default: all)"})


def run_pipeline(config: PipelineConfig) -> dict[str, Path]:
    """Run every stage in order. Finished work is reused: the zoo and graphs skip what exists, training is skipped
    when an encoder is already exported (delete ``encoder/`` to retrain), the index adds only new models."""
    out = Path(config.out_dir).resolve()
    ensure_ray(num_cpus=config.num_cpus)
    artifacts: dict[str, Path] = {}
    names = ["zoo", "graphify", *(["tune"] if config.tune else []), "train", "index", "evaluate"]

    def step(name: str, target: Path):
        return _stage(names.index(name) + 1, len(names), name, target)

    with step("zoo", out / "zoo"):
        artifacts["zoo"] = build_zoo(ZooConfig(preset=config.zoo_preset), out / "zoo").parent
    with step("graphify", out / "graphs"):
        result = graphify(artifacts["zoo"], out / "graphs", GraphifyConfig())
        print(f"      {result.written} written, {result.skipped} already done, {len(result.errors)} errors")
        artifacts["graphs"] = out / "graphs"

    train_config = TrainConfig(epochs=config.epochs, num_workers=config.num_workers, use_gpu=config.use_gpu)
    if config.tune:
        with step("tune", out / "tune"):
            tune_config = TuneConfig(num_samples=config.tune_samples, max_epochs=config.epochs)
            run_sweep(artifacts["zoo"], artifacts["graphs"], out / "tune", tune_config, base=train_config)
            train_config = apply_json_overrides(train_config, str(out / "tune" / "best_config.json"))
    with step("train", out / "train"):
        encoder_dir = out / "train" / "encoder"
        if (encoder_dir / ENCODER_FILE).exists():
            print(f"      reusing the exported encoder in {encoder_dir}")
        else:
            encoder_dir = train_encoder(artifacts["zoo"], artifacts["graphs"], out / "train", train_config).encoder_dir
        artifacts["encoder"] = encoder_dir
    with step("index", out / "index"):
        summary = build_index_job(artifacts["graphs"], encoder_dir, out / "index", IndexConfig())
        print("      " + ", ".join(f"{k}: {v}" for k, v in summary.items()))
        artifacts["index"] = out / "index"
    with step("evaluate", out / "report"):
        artifacts["report"] = evaluate(artifacts["zoo"], artifacts["graphs"], encoder_dir, out / "report", EvalConfig())
    return artifacts


@contextlib.contextmanager
def _stage(number: int, total: int, name: str, target: Path):
    """Print a numbered banner for a stage and, when it succeeds, how long it took."""
    print(f"[{number}/{total}] {name} -> {target}", flush=True)
    start = time.perf_counter()
    yield
    print(f"      done in {time.perf_counter() - start:.1f} s", flush=True)
