"""The main job: zoo -> graphs -> (tune) -> train -> index -> evaluation report, on a local Ray or a cluster."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from raywse.core.artifacts import ForeignFiles, ReportFiles, RunLayout, TuneFiles
from raywse.core.config import apply_json_overrides
from raywse.core.console import say
from raywse.core.ray_session import ensure_ray
from raywse.data.graphify import GraphifyConfig, graphify
from raywse.eval.config import EvalConfig
from raywse.eval.report import evaluate
from raywse.eval.summary import summary_console_table
from raywse.index.embed import build_index
from raywse.index.faiss_index import IndexConfig
from raywse.models.checkpoint import has_encoder
from raywse.train.trainer import TrainConfig, train_as, train_encoder, trained_rank_steps
from raywse.tune.sweep import TuneConfig, run_sweep
from raywse.zoo.build import build_zoo
from raywse.zoo.datasets import write_zoo_probes
from raywse.zoo.plan import PRESETS, ZooConfig


@dataclass
class PipelineConfig:
    """Where the run writes, and how big it is; laptop-sized by default."""

    out_dir: str = field(default="runs/demo", metadata={"help": "directory for every artifact of the run"})
    zoo_preset: str = field(default="small", metadata={"help": f"zoo size: {' | '.join(PRESETS)}"})
    # 20 passes over the ~1,700 learned training models of the demo zoo (~520 steps per rank, ~4 minutes here); the
    # encoder-v2 issue's 100 epochs would take ~19 minutes, more than its whole-demo budget (README, bench/README.md)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20))
    tune: bool = field(default=False, metadata={"help": "run a Tune sweep first and train with its best config"})
    sweep: TuneConfig = field(default_factory=TuneConfig)
    num_cpus: int | None = field(default=None, metadata={"help": "CPUs for the local Ray (default: all)"})
    foreign: bool = field(default=True, metadata={"help": "build and score a foreign zoo (foreign/train_foreign.py)"})


#: The foreign zoo's script: plain PyTorch, no raywse import (in a source checkout, beside the package).
FOREIGN_SCRIPT = Path(__file__).resolve().parents[1] / "foreign" / "train_foreign.py"


def run_pipeline(config: PipelineConfig) -> dict[str, Path]:
    """Run every stage in order. Finished work is reused: the zoo and graphs skip what exists, training is skipped
    when an encoder is already exported (delete ``train/encoder/`` to retrain), the index adds only new models."""
    run = RunLayout(Path(config.out_dir).resolve())
    ensure_ray(num_cpus=config.num_cpus)
    foreign = config.foreign and FOREIGN_SCRIPT.is_file()
    if config.foreign and not foreign:
        say(f"      no foreign zoo: {FOREIGN_SCRIPT} is not here (run from a source checkout)")
    names = ["zoo", *(["foreign"] if foreign else []), "graphify", *(["tune"] if config.tune else []), "train"]
    names += ["index", "evaluate"]

    def step(name: str, target: Path):
        return _stage(names.index(name) + 1, len(names), name, target)

    with step("zoo", run.zoo):
        build_zoo(ZooConfig.preset(config.zoo_preset), run.zoo)
    if foreign:
        with step("foreign", run.foreign):
            per_task = "4" if config.zoo_preset == "tiny" else "30"
            zoo_probes = write_zoo_probes(run.foreign / ForeignFiles.ZOO_PROBES)  # the README's recipe, as a user
            cmd = [sys.executable, str(FOREIGN_SCRIPT), "--out", str(run.foreign), "--models-per-task", per_task,
                   "--zoo-probes", str(zoo_probes)]  # fmt: skip
            proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)  # its stderr: to our log
            say(f"      {(proc.stdout.strip().splitlines() or ['(the script printed nothing)'])[-1]}")
    with step("graphify", run.graphs):
        result = graphify(run.zoo, run.graphs, GraphifyConfig())
        say(f"      {result.written} written, {result.skipped} already done, {len(result.errors)} errors")
    train_config = config.train
    if config.tune:
        with step("tune", run.tune):
            sweep = replace(config.sweep, max_epochs=train_config.epochs)
            run_sweep(run.zoo, run.graphs, run.tune, sweep, train_config.contrastive, train_config.encoder)
            train_config = apply_json_overrides(train_config, str(run.tune / TuneFiles.BEST_CONFIG))
    with step("train", run.train):
        if has_encoder(run.encoder):
            say(f"      reusing the exported encoder in {run.encoder}")
        else:
            result = train_encoder(run.zoo, run.graphs, run.train, train_config)
            history, workers = result.metrics, result.config.num_workers
            last = history[-1] if history else {}
            loss, val = _number(last.get("loss")), _number(last.get("val_mAP"))
            say(
                f"      {len(history)} epochs, {workers} worker{'s' * (workers > 1)} on {last.get('device', '?')}, "
                f"{last.get('rank_steps', 0)} optimiser steps over all ranks; last epoch: loss {loss}, val mAP {val}"
            )
    with step("index", run.index):
        summary = build_index(run.graphs, run.encoder, run.index, IndexConfig())
        say(
            f"      {summary['count']} models in the {summary['kind']} index{' on the GPU' * summary['faiss_on_gpu']} "
            f"({summary['embedded']} embedded now{' by ' * bool(summary['embedded_by'])}{summary['embedded_by']}, "
            f"{len(summary['errors'])} errors), encoder {summary['encoder_version']}"
        )
    with step("evaluate", run.report):
        # flat_mlp gets raywse's budget: as many one-rank optimiser steps as all its ranks took (gnn_nonequivariant
        # is trained as raywse was, from the run's saved TrainConfig)
        steps = trained_rank_steps(run.train)
        budget = {"gnn_baseline_steps": steps, "baseline_train_steps": steps} if steps else {}
        eval_config = EvalConfig(foreign_dir=str(run.foreign) if foreign else "", **budget)
        gnn_trainer = train_as(run.train, run.zoo, run.graphs)
        report = evaluate(run.zoo, run.graphs, run.encoder, run.report, eval_config, gnn_trainer)
    metrics = json.loads((run.report / ReportFiles.METRICS).read_text())
    say(f"summary ({run.report / ReportFiles.METRICS}; definitions in the report):")
    for line in summary_console_table(metrics):
        say("  " + line)
    return {"zoo": run.zoo, "graphs": run.graphs, "encoder": run.encoder, "index": run.index, "report": report}


@contextlib.contextmanager
def _stage(number: int, total: int, name: str, target: Path):
    """Print a numbered banner for a stage and, when it succeeds, how long it took."""
    say(f"[{number}/{total}] {name} -> {target}")
    start = time.perf_counter()
    yield
    say(f"      done in {time.perf_counter() - start:.1f} s")


def _number(value) -> str:
    return f"{value:.3f}" if isinstance(value, float | int) else "n/a"
