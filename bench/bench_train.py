"""Training benchmark, one run: contrastive-encoder throughput in one process vs Ray Train with 1 and 2 workers.

Usage: ``python bench/bench_train.py [--zoo DIR] [--graphs DIR] [--out /tmp/raywse_bench_train] [--epochs 4]``
(``--ray-only``: the Ray Train setups alone, e.g. to compare two checkouts, each run with its own environment).
Defaults use the zoo cached by ``bench_graphify.py`` (``/tmp/raywse_bench_graphify/zoo_small``; built if missing)
and graphify it into ``--out/graphs`` if no ``--graphs`` is given. Writes ``bench/results/train.json``.

Throughput is graphs/s: positive pairs x 2 views encoded (forward + backward + AdamW step) per second. Every setup
uses ``TrainConfig()`` defaults (``EncoderConfig()``: depth 4, hidden 64, embed 64, accuracy head;
``ContrastiveConfig()``: ``batch_tasks`` x ``models_per_task`` models, two views each, per worker step) on the zoo's
``train`` split (learned models):

* single process: ``raywse.models.contrastive.ContrastiveLoop`` in-process with ``torch.set_num_threads`` 1 and 2;
  every epoch is timed, and ``validate`` on the ``val`` split is timed beside it (a Ray Train epoch includes it);
* Ray Train: ``train_encoder(..., TrainConfig(epochs=E, num_workers=n))`` for n = 1, 2 on a local Ray with 2 CPUs.
  Epoch ends are the timestamps Ray Train puts in each checkpoint directory's name (rank 0 checkpoints every epoch;
  a thread lists the run directory every 50 ms, as only the last two are kept). Steady state = median time between
  consecutive checkpoints (train epoch + validate + checkpoint); start-up = end of epoch 0 minus one steady epoch,
  counted from the ``train_encoder`` call (Ray Data reads + filters the shards, the workers start, join the process
  group and materialise their shards).

With n workers each rank draws B = ``batch_tasks * models_per_task`` models per step from its 1/n of the train split,
so an epoch covers n * floor(floor(N / n) / B) * B models (the global batch is n * B).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import threading
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import ray
import torch
from _machine import load, machine

from raywse.core.artifacts import GraphFiles, ZooFiles
from raywse.core.ray_session import ensure_ray
from raywse.data.graphify import GraphifyConfig, graphify, load_graphs
from raywse.data.labels import ZooLabels
from raywse.models.contrastive import ContrastiveLoop, EmbedAndPredict, LabelledGraphs, validate
from raywse.models.encoder import NeuralGraphEncoder
from raywse.train.trainer import TrainConfig, train_encoder
from raywse.zoo.build import build_zoo
from raywse.zoo.plan import ZooConfig

CKPT_RE = re.compile(r"checkpoint_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}\.\d+)$")


def pairs_per_epoch(n_train: int, workers: int, batch: int) -> int:
    per_rank = n_train // workers
    return workers * min(per_rank, max(1, per_rank // batch) * batch)


def single_process(config: TrainConfig, train: LabelledGraphs, val: LabelledGraphs, threads: int, epochs: int) -> dict:
    """Time ``ContrastiveLoop`` epochs (and ``validate``) in this process with ``threads`` torch threads."""
    cfg = config.contrastive
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    load_before = load()
    t0 = time.perf_counter()
    encoder = NeuralGraphEncoder(config.encoder_config())
    model = EmbedAndPredict(encoder)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    prepared = LabelledGraphs([encoder.prepare(g) for g in train.graphs], train.task, train.accuracy)
    loop = ContrastiveLoop(cfg, prepared, model, opt, "cpu")
    setup = time.perf_counter() - t0
    epoch_s, val_s = [], []
    for epoch in range(epochs):
        t1 = time.perf_counter()
        model.train()  # validate leaves the encoder in eval mode
        loop.train_epoch(epoch)
        t2 = time.perf_counter()
        validate(encoder, val, "cpu")
        epoch_s.append(t2 - t1)
        val_s.append(time.perf_counter() - t2)
    total = time.perf_counter() - t0
    pairs = min(len(train), loop.steps_per_epoch * cfg.batch_tasks * cfg.models_per_task)
    steady = statistics.median(epoch_s[1:] if epochs > 1 else epoch_s)
    steady_val = statistics.median(val_s[1:] if epochs > 1 else val_s)
    return {
        "threads": threads,
        "steps_per_epoch": loop.steps_per_epoch,
        "graphs_per_epoch": 2 * pairs,
        "setup_s": round(setup, 3),
        "epoch_s": [round(s, 3) for s in epoch_s],
        "validate_s": [round(s, 3) for s in val_s],
        "steady_graphs_per_s": round(2 * pairs / steady, 1),
        "steady_graphs_per_s_incl_validate": round(2 * pairs / (steady + steady_val), 1),
        "end_to_end_s": round(total, 2),
        "end_to_end_graphs_per_s": round(2 * pairs * epochs / total, 1),
        "load_before": load_before,
        "load_after": load(),
    }


def watch_checkpoints(run_dir: Path, seen: set[str], stop: threading.Event) -> None:
    """Collect checkpoint directory names as they appear (Ray Train deletes all but the last two)."""
    while not stop.is_set():
        if run_dir.is_dir():
            seen.update(p.name for p in run_dir.iterdir() if CKPT_RE.match(p.name))
        stop.wait(0.05)


def ray_train(zoo: Path, graphs: Path, out: Path, config: TrainConfig, n_train: int) -> dict:
    """Run ``train_encoder`` and derive start-up and per-epoch times from the checkpoint timestamps."""
    out = out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    seen: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_checkpoints, args=(out / "ray_results" / config.run_name, seen, stop), daemon=True
    )
    watcher.start()
    load_before = load()
    start_wall, t0 = time.time(), time.perf_counter()
    train_encoder(zoo, graphs, out, config)
    total = time.perf_counter() - t0
    stop.set()
    watcher.join()
    ends = sorted(datetime.strptime(CKPT_RE.match(s).group(1), "%Y-%m-%d_%H-%M-%S.%f").timestamp() for s in seen)
    ends = [e - start_wall for e in ends]
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    per_step = config.contrastive.batch_tasks * config.contrastive.models_per_task
    pairs = pairs_per_epoch(n_train, config.num_workers, per_step)
    steady = statistics.median(gaps) if gaps else float("nan")
    return {
        "workers": config.num_workers,
        "graphs_per_epoch": 2 * pairs,
        "epochs_seen": len(ends),
        "epoch_end_s": [round(e, 2) for e in ends],
        "epoch_s": [round(g, 3) for g in gaps],
        "startup_s": round(ends[0] - steady, 2) if ends else None,
        "steady_epoch_s": round(steady, 3),
        "steady_graphs_per_s": round(2 * pairs / steady, 1),
        "end_to_end_s": round(total, 2),
        "end_to_end_graphs_per_s": round(2 * pairs * config.epochs / total, 1),
        "load_before": load_before,
        "load_after": load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--zoo", default="/tmp/raywse_bench_graphify/zoo_small")
    ap.add_argument("--preset", default="small", help="preset to build when --zoo does not exist")
    ap.add_argument("--graphs", help="graphify output of the zoo (default: graphify into --out/graphs)")
    ap.add_argument("--out", default="/tmp/raywse_bench_train")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per setup (the first counts as warm-up)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "train.json"))
    ap.add_argument("--ray-only", action="store_true", help="only the Ray Train setups (e.g. to compare checkouts)")
    args = ap.parse_args()
    out, zoo = Path(args.out), Path(args.zoo)
    config = TrainConfig(epochs=args.epochs)
    result: dict = {"machine": machine(), "load_start": load(), "config": asdict(config)}

    if not (zoo / ZooFiles.MANIFEST).exists():
        build_zoo(ZooConfig.preset(args.preset, num_cpus=2), zoo, progress=False)
    graphs_dir = Path(args.graphs) if args.graphs else out / "graphs"
    if not (graphs_dir / GraphFiles.MANIFEST).exists():
        graphify(zoo, graphs_dir, GraphifyConfig(progress=False))
    if ray.is_initialized():  # single-process figures without Ray's processes in the background
        ray.shutdown()

    labels = ZooLabels.from_zoo(zoo)
    train = labels.label(load_graphs(graphs_dir, sorted(labels.ids("train"))), learned_only=True)
    val = labels.label(load_graphs(graphs_dir, sorted(labels.ids("val"))))
    nodes = sum(int(g.num_nodes) for g in train.graphs) / len(train)
    edges = sum(int(g.edge_index.shape[1]) for g in train.graphs) / len(train)
    result["data"] = {"zoo": str(zoo), "graphs": str(graphs_dir), "train": len(train), "val": len(val),
                      "train_nodes_mean": round(nodes, 1), "train_edges_mean": round(edges, 1)}  # fmt: skip
    print("data:", json.dumps(result["data"]))

    result["single"] = []
    for threads in () if args.ray_only else (1, 2):
        run = single_process(config, train, val, threads, args.epochs)
        result["single"].append(run)
        print("single:", json.dumps(run))

    t0 = time.perf_counter()
    ensure_ray(num_cpus=2)
    result["ray_startup_s"] = round(time.perf_counter() - t0, 2)
    result["ray_train"] = []
    for workers in (1, 2):
        cfg = TrainConfig(epochs=args.epochs, num_workers=workers, use_gpu=False, run_name=f"bench_w{workers}")
        run = ray_train(zoo, graphs_dir, out / f"ray_w{workers}", cfg, len(train))
        result["ray_train"].append(run)
        print("ray train:", json.dumps(run))
    result["load_end"] = load()
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
