"""GPU FAISS against CPU FAISS, side by side in one run, through the production path (:class:`EmbeddingIndex`).

``python bench/bench_faiss_gpu.py --out results/faiss_gpu.json`` on a machine where FAISS sees a GPU (bench/README.md,
"GPU FAISS"). For each size, the same clustered unit vectors as ``bench_faiss.py`` (dim 64): the exact index and the
IVF index (nlist ~4*sqrt(n), nprobe 16) built once with ``IndexConfig(use_gpu=True)`` and once with ``use_gpu=False``;
build time, the batch search time of the queries, recall@10 against the CPU exact search, and for the exact index how
many queries get the CPU's neighbours (as a set: exact ties may reorder). The first GPU build also pays FAISS's GPU
start-up (resources, cuBLAS), reported apart as ``gpu_warmup_s``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from bench_faiss import NUM_CENTRES, SPREAD, clustered, machine, recall, rows_of, timed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raywse.core.io import write_json_atomic  # noqa: E402
from raywse.index.faiss_index import EmbeddingIndex, IndexConfig  # noqa: E402

K = 10


def bench_size(n: int, dim: int, num_queries: int, nprobe: int) -> dict:
    rng = np.random.default_rng(n)
    centres = rng.standard_normal((NUM_CENTRES, dim), dtype=np.float32)
    base, queries = clustered(n, dim, centres, rng, SPREAD), clustered(num_queries, dim, centres, rng, SPREAD)
    ids = [str(i) for i in range(n)]
    out: dict = {"n": n, "dim": dim, "queries": num_queries}
    truth = None
    for kind, threshold in (("flat", n + 1), ("ivf", 0)):
        found = {}
        for device in ("cpu", "gpu"):
            config = IndexConfig(exact_threshold=threshold, nprobe=nprobe, use_gpu=device == "gpu")
            index, build_s = timed(EmbeddingIndex.build, ids, base, "bench", config)
            index.search(queries[:10], K)  # warm
            (hits, _), search_s = timed(index.search, queries, K)
            rows = rows_of(index, hits)
            if truth is None:  # the first index is the CPU exact one
                truth = rows
            found[device] = rows
            entry = {"build_s": build_s, "search_s": search_s, "ms_per_query": 1e3 * search_s / num_queries}
            entry |= {"recall@10": recall(rows, truth), "on_gpu": index.on_gpu}
            out[f"{kind}_{device}"] = entry
            del index
            gc.collect()
        cpu, gpu = out[f"{kind}_cpu"], out[f"{kind}_gpu"]
        out[f"{kind}_gpu_speedup"] = {
            "build": cpu["build_s"] / gpu["build_s"],
            "search": cpu["search_s"] / gpu["search_s"],
        }
        if kind == "flat":
            same = [set(a) == set(b) for a, b in zip(found["cpu"], found["gpu"], strict=True)]
            out["flat_same_neighbours_fraction"] = float(np.mean(same))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--out", default=str(ROOT / "bench/results/faiss_gpu.json"))
    args = parser.parse_args(argv)
    if faiss.get_num_gpus() == 0:
        sys.exit("bench_faiss_gpu: FAISS sees no GPU (a CPU build, or no GPU here)")
    start = time.perf_counter()
    report = {"command": " ".join(["python", "bench/bench_faiss_gpu.py", *(argv or sys.argv[1:])])}
    report |= {
        "machine": machine(),
        "gpu": os.popen("nvidia-smi --query-gpu=name,driver_version --format=csv,noheader").read().strip(),
    }
    _, report["gpu_warmup_s"] = timed(EmbeddingIndex.build, ["a"], np.ones((1, args.dim), np.float32), "w")
    report["sizes"] = []
    for n in args.sizes:
        report["sizes"].append(bench_size(n, args.dim, args.queries, args.nprobe))
        print(json.dumps(report["sizes"][-1]), flush=True)
    report["seconds"] = time.perf_counter() - start
    write_json_atomic(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
