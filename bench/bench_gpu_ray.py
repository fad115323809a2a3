"""The Ray GPU paths, measured side by side in one run on one machine: Ray Train with ``use_gpu`` against CPU
workers (same config, same graphs), and the index job's embedding actors on the GPU against CPU actors (same
encoder, same graphs: time, and how far the two sets of vectors differ).

Needs a GPU, Ray, a zoo and its graphs, and a trained encoder (for instance a run of the main job's):

    python jobs/pipeline.py --out-dir /tmp/gpurun --zoo-preset tiny --train.use-gpu --train.num-workers 1
    python bench/bench_gpu_ray.py --zoo ZOO --graphs GRAPHS --encoder /tmp/gpurun/train/encoder \
        --out bench/results/gpu_ray.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import ray
import torch
from _machine import load, machine

from raywse.core.config import apply_json_overrides
from raywse.core.ray_session import ensure_ray
from raywse.index.embed import embed_graphs
from raywse.train.trainer import TrainConfig, train_encoder


def timed_training(zoo: Path, graphs: Path, out: Path, config: TrainConfig) -> dict:
    """Train ``config`` from scratch into ``out``; wall time and the per-epoch times Ray Train reported."""
    start = time.perf_counter()
    result = train_encoder(zoo, graphs, out, config)
    ends = [m["finished_at"] for m in result.metrics]
    return {
        "config": {"num_workers": config.num_workers, "use_gpu": config.use_gpu, "epochs": config.epochs},
        "devices": sorted({m["device"] for m in result.metrics}),
        "seconds": round(time.perf_counter() - start, 2),
        "steady_epoch_s": round(float(np.median(np.diff(ends))), 2) if len(ends) > 1 else None,
        "final_loss": round(result.metrics[-1]["loss"], 4),
        "final_val_precision@10": round(result.metrics[-1]["val_precision@10"], 4),
    }


def timed_embedding(graphs: Path, encoder: Path, use_gpu: bool, repeats: int = 2) -> tuple[dict, dict]:
    """Embed every graph on GPU or CPU actors (best of ``repeats``); the timing, and the vectors by model id."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        table = embed_graphs(graphs, encoder, use_gpu=use_gpu)
        best = min(best, time.perf_counter() - start)
    vectors = dict(zip(table.column("model_id").to_pylist(), table.column("vector").to_pylist(), strict=True))
    failed = sum(e is not None for e in table.column("error").to_pylist())
    stats = {"graphs": table.num_rows, "failed": failed, "best_seconds": round(best, 2)}
    return stats | {"graphs_per_s": round(table.num_rows / best, 1)}, {
        m: np.asarray(v, np.float32) for m, v in vectors.items() if v is not None
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--graphs", type=Path, required=True)
    parser.add_argument("--encoder", type=Path, required=True, help="a trained encoder directory")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-json", help="TrainConfig overrides (JSON file, as `raywse train --config-json` reads)")
    args = parser.parse_args()
    ensure_ray()
    results: dict = {
        "machine": machine() | {"gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda},
        "ray_resources": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
        "load_before": load(),
    }
    config = replace(apply_json_overrides(TrainConfig(), args.train_json), epochs=args.epochs, run_name="bench")
    scratch = args.out.parent / "gpu_ray_scratch"
    for name, setup in (
        ("train_gpu_1_worker", replace(config, num_workers=1, use_gpu=True)),
        ("train_cpu_1_worker", replace(config, num_workers=1, use_gpu=False)),
    ):
        results[name] = timed_training(args.zoo, args.graphs, scratch / name, setup)
        print(name, results[name], flush=True)
    results["train_config"] = asdict(config)

    gpu_stats, gpu_vectors = timed_embedding(args.graphs, args.encoder, use_gpu=True)
    cpu_stats, cpu_vectors = timed_embedding(args.graphs, args.encoder, use_gpu=False)
    shared = sorted(set(gpu_vectors) & set(cpu_vectors))
    diff = max(float(np.abs(gpu_vectors[m] - cpu_vectors[m]).max()) for m in shared)
    cosine = min(
        float(gpu_vectors[m] @ cpu_vectors[m] / np.linalg.norm(gpu_vectors[m]) / np.linalg.norm(cpu_vectors[m]))
        for m in shared
    )
    results["embed_gpu_actors"], results["embed_cpu_actors"] = gpu_stats, cpu_stats
    results["embed_agreement"] = {"models": len(shared), "max_abs_diff": diff, "min_cosine": cosine}
    print("embed", gpu_stats, cpu_stats, results["embed_agreement"], flush=True)
    results["load_after"] = load()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
