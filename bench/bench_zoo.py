"""Zoo benchmark, one run: end-to-end zoo build, batched vs per-model training per family, FLOP/s vs sgemm peak.

Usage: ``python bench/bench_zoo.py [--preset bench] [--out /tmp/raywse_bench_zoo] [--steps 200] [--loop-models 3]
[--time-limit 600]``. Writes ``bench/results/zoo_<preset>.json``; the build stops (and says so) at ``--time-limit``
seconds. The zoo issue's targets: ``--preset small`` >= 3,000 models in <= 300 s, ``--preset bench`` >= 10,000
models in <= 600 s, and >= 97% of the models learned in each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from _machine import machine

from raywse.core.artifacts import ZooFiles
from raywse.core.ray_session import ensure_ray
from raywse.zoo.arch import Arch, init_params
from raywse.zoo.batched import minibatch_indices, train_batched, train_reference
from raywse.zoo.build import build_zoo
from raywse.zoo.datasets import load_task
from raywse.zoo.plan import ZooConfig, plan_zoo


def sgemm_peak(threads: int, n: int = 2048, reps: int = 10) -> float:
    """Measured single-precision matmul FLOP/s with ``threads`` threads (best of ``reps``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def batched_vs_loop(arch: Arch, task: str, models: int, loop_models: int, steps: int, batch: int) -> dict:
    """Per-model training seconds: one batched program of ``models`` vs a plain loop over ``loop_models``. The loop
    trains each model as an ``nn.Module`` with ``torch.optim.Adam`` (:func:`train_reference`) where the reference
    modules can express the family (MLP, CNN); ResNets and transformers, which they cannot, loop over one-model
    batched programs instead (the same kernels, one model at a time)."""
    torch.set_num_threads(1)
    data = load_task(task)
    shape = data.input_shape_for(arch.family)
    spec = arch.spec(shape)
    inits = [init_params(arch, shape, data.num_classes, s) for s in range(models)]
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    idx = torch.stack([minibatch_indices(len(data.x_train), steps, batch, s) for s in range(models)], 1)
    lr, wd = torch.full((models,), 3e-3), torch.full((models,), 1e-4)
    plain = arch.family in ("mlp", "cnn")

    def train_one(m: int, rows: torch.Tensor) -> None:
        if plain:
            train_reference(spec, inits[m], data.x_train, data.y_train, rows[:, m], 3e-3, 1e-4)
        else:
            one = {k: v[m : m + 1] for k, v in stacked.items()}
            train_batched(spec, one, data.x_train, data.y_train, rows[:, m : m + 1], lr[:1], wd[:1])

    train_batched(spec, stacked, data.x_train, data.y_train, idx[:2], lr, wd)  # warm-up
    train_one(0, idx[:2])
    t0 = time.perf_counter()
    train_batched(spec, stacked, data.x_train, data.y_train, idx, lr, wd)
    batched = (time.perf_counter() - t0) / models
    t0 = time.perf_counter()
    for m in range(loop_models):
        train_one(m, idx)
    loop = (time.perf_counter() - t0) / loop_models
    flops = 6.0 * arch.macs_per_sample(shape, data.num_classes) * batch * steps
    return {
        "family": arch.family,
        "arch": arch.describe(),
        "task": task,
        "steps": steps,
        "batch_size": batch,
        "batched_models": models,
        "loop_models": loop_models,
        "loop": "nn.Module + torch.optim.Adam" if plain else "one-model batched programs",
        "batched_s_per_model": batched,
        "loop_s_per_model": loop,
        "speedup": loop / batched,
        "batched_flops_per_s_1thread": flops / batched,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--out", default="/tmp/raywse_bench_zoo")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--loop-models", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=600.0, help="stop the build after this many seconds")
    ap.add_argument("--results", default="", help="default: bench/results/zoo_<preset>.json")
    args = ap.parse_args()
    load_start = os.getloadavg()
    info = machine()
    cores = info["cores"]
    peak_all, peak_1 = sgemm_peak(cores), sgemm_peak(1)
    print(f"machine: {info}; sgemm peak {peak_all / 1e9:.1f} GFLOP/s ({cores} threads), {peak_1 / 1e9:.1f} (1 thread)")

    cases = [
        (Arch("mlp", (64, 64), "tanh"), "digits/all10", 32),
        (Arch("mlp", (32,), "relu"), "mnist1d/all10", 16),
        (Arch("cnn", (), "relu", (8, 16), (1, 2)), "digits/all10", 32),
        (Arch("cnn", (16,), "relu", (4, 8, 16), (1, 2, 1)), "mnist14/all10", 16),
        (Arch("resnet", (), "relu", (8, 8, 16), (2, 1, 2)), "digits/all10", 32),
        (Arch("resnet", (), "tanh", (16, 16, 16), (2, 1, 2)), "mnist14/all10", 32),
        (Arch("transformer", (32,), "gelu", (16,), (2,), heads=2), "digits/all10", 32),
        (Arch("transformer", (16, 32), "relu", (8,), (2,), heads=4), "mnist14/all10", 32),
    ]
    ratios = [batched_vs_loop(a, task, 64, args.loop_models, args.steps, bs) for a, task, bs in cases]
    for r in ratios:
        print(
            f"{r['arch']} on {r['task']}: batched {r['batched_s_per_model'] * 1e3:.1f} ms/model, loop "
            f"{r['loop_s_per_model'] * 1e3:.1f} ms/model -> {r['speedup']:.1f}x, "
            f"{r['batched_flops_per_s_1thread'] / peak_1:.1%} of 1-thread peak"
        )
    families = {}
    for fam in dict.fromkeys(r["family"] for r in ratios):
        rs = [r for r in ratios if r["family"] == fam]
        families[fam] = {
            "speedup_min": min(r["speedup"] for r in rs),
            "speedup_median": statistics.median(r["speedup"] for r in rs),
            "batched_fraction_of_1thread_peak_median": statistics.median(
                r["batched_flops_per_s_1thread"] / peak_1 for r in rs
            ),
        }
    print("per family:", json.dumps(families))

    loads: list[tuple[float, float, float]] = [os.getloadavg()]
    stop = threading.Event()

    def sample_load() -> None:
        while not stop.wait(15):
            loads.append(os.getloadavg())

    threading.Thread(target=sample_load, daemon=True).start()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    config = ZooConfig.preset(args.preset)
    planned = sum(len(g.runs) * len(g.snapshot_steps) for g in plan_zoo(config))
    torch.set_num_threads(cores)
    t0 = time.perf_counter()
    ensure_ray()
    manifest = build_zoo(config, out, time_limit_s=args.time_limit)
    wall = time.perf_counter() - t0
    stop.set()
    manifest_table = pq.read_table(manifest, columns=["learned"])
    n_models = manifest_table.num_rows
    n_learned = int(sum(manifest_table.column("learned").to_pylist()))
    targets = {"small": (3000, 300.0), "bench": (10_000, 600.0)}
    min_models, max_seconds = targets.get(args.preset, (0, float("inf")))
    stats = json.loads((out / ZooFiles.STATS).read_text())
    achieved = stats["train_flops"] / wall
    in_training = stats["train_flops"] / stats["train_seconds"]
    build = {
        "preset": args.preset,
        "models_planned": planned,
        "models_built": n_models,
        "stopped_at_time_limit": stats["stopped_early"],
        "time_limit_s": args.time_limit,
        "models_learned": n_learned,
        "learned_fraction": n_learned / max(1, n_models),
        "target": {"models": min_models, "seconds": max_seconds, "learned_fraction": 0.97},
        "target_met": n_models >= min_models and wall <= max_seconds and n_learned >= 0.97 * n_models,
        "wall_seconds_incl_ray_start": wall,
        "models_per_second": n_models / wall,
        "train_flops": stats["train_flops"],
        "worker_train_seconds": stats["train_seconds"],
        "achieved_flops_per_s_end_to_end": achieved,
        "fraction_of_peak_end_to_end": achieved / peak_all,
        "flops_per_s_inside_training_per_worker": in_training,
        "fraction_of_1thread_peak_inside_training": in_training / peak_1,
    }
    print(json.dumps(build, indent=2))
    result = {
        "machine": info,
        "sgemm_peak_flops_per_s": {"all_threads": peak_all, "one_thread": peak_1},
        "batched_vs_loop": ratios,
        "batched_vs_loop_per_family": families,
        "build": build,
        "command": "python bench/bench_zoo.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "load_average_1min_during_build": {
            "start": loads[0][0],
            "max": max(x[0] for x in loads),
            "mean": statistics.mean(x[0] for x in loads),
            "end": os.getloadavg()[0],
        },
        "load_average_at_start": load_start,
    }
    results = Path(args.results or Path(__file__).parent / "results" / f"zoo_{args.preset}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
