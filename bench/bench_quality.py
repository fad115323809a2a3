"""Encoder quality over seeds: train the encoder with several seeds on one zoo and evaluate each, so the summary's
raywse row gets a mean ± sd instead of one run.

Usage: ``python bench/bench_quality.py --run runs/demo [--seeds 0 1 2] [--epochs 10] [--out /tmp/raywse_quality]``
(``--run-seed 0 --seeds 1 2``: the main job's own encoder, trained with seed 0, is seed 0; run it from a checkout that
does not change while it runs: its Ray workers import the code again).
``--run`` is a finished main-job directory (its ``zoo/``, ``graphs/`` and ``foreign/`` are reused); each seed trains
``TrainConfig(epochs, contrastive.seed=seed)`` exactly as the main job does and is evaluated with the reference rows
``arch_oracle`` and ``random_init_gnn`` (fixed seed) but without the fine-tuning experiment. Writes
``bench/results/quality.json``: per seed the summary rows, and per summary metric the mean and sample sd of raywse.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from _machine import load, machine

from raywse.core.artifacts import EncoderFiles, ReportFiles, RunLayout
from raywse.eval.config import EvalConfig
from raywse.eval.report import evaluate
from raywse.eval.summary import SUMMARY_METRICS
from raywse.models.checkpoint import has_encoder
from raywse.pipeline import PipelineConfig
from raywse.train.trainer import TrainConfig, train_encoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished main-job directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=PipelineConfig().train.epochs, help="default: the main job's")
    ap.add_argument(
        "--run-seed",
        type=int,
        help="the main job's own encoder is this seed (it trained with the same "
        "TrainConfig): its report's summary is read instead of training it again",
    )
    ap.add_argument("--out", default="/tmp/raywse_quality")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "quality.json"))
    args = ap.parse_args()
    run, out = RunLayout(Path(args.run).resolve()), Path(args.out)
    foreign = str(run.foreign) if (run.foreign / "manifest.csv").exists() else ""
    flags = " ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in vars(args).items() if v is not None)  # fmt: skip
    result = {"machine": machine(), "load_at_start": load(), "command": f"python bench/bench_quality.py {flags}",
              "seeds": {}}  # fmt: skip
    if args.run_seed is not None:
        metrics = json.loads((run.report / ReportFiles.METRICS).read_text())
        result["seeds"][args.run_seed] = {"summary": metrics["summary"], "train_seconds": None, "from_run": True}
    for seed in args.seeds:
        base = TrainConfig(epochs=args.epochs)
        config = replace(base, contrastive=replace(base.contrastive, seed=seed))
        encoder_dir = out / f"seed{seed}" / EncoderFiles.DIR  # where train_encoder exports
        start = time.perf_counter()
        if not has_encoder(encoder_dir):  # a rerun reuses a seed's finished training
            train_encoder(run.zoo, run.graphs, out / f"seed{seed}", config)
        trained = time.perf_counter() - start
        eval_config = EvalConfig(baselines=("arch_oracle", "random_init_gnn"), finetune_tasks=(), foreign_dir=foreign)
        report_dir = out / f"seed{seed}" / "report"
        evaluate(run.zoo, run.graphs, encoder_dir, report_dir, eval_config)
        metrics = json.loads((report_dir / ReportFiles.METRICS).read_text())
        result["seeds"][seed] = {"summary": metrics["summary"], "train_seconds": trained, "load": load()}
        print(f"seed {seed}: {json.dumps(metrics['summary']['raywse'])}", flush=True)
    rows = [s["summary"]["raywse"] for s in result["seeds"].values()]
    result["raywse"] = {
        m: {"mean": statistics.mean(v), "sd": statistics.stdev(v) if len(v) > 1 else None, "values": v}
        for m in SUMMARY_METRICS
        if (v := [r[m] for r in rows if r.get(m) is not None])
    }
    result["load_at_end"] = load()
    Path(args.results).write_text(json.dumps(result, indent=2))
    print(json.dumps(result["raywse"], indent=2))


if __name__ == "__main__":
    main()
