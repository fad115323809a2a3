"""FAISS bench: build / query latency and recall@10 of IVF and HNSW vs exact FlatIP vs NumPy brute force.

``python bench/bench_faiss.py`` measures 10k / 100k / 1M clustered Gaussian embeddings (dim 64, L2-normalised,
1,000 queries from the same distribution) in one run; writes bench/results/faiss.json and the "## FAISS" section
of bench/README.md. IVF goes through :class:`raywse.index.faiss_index.EmbeddingIndex` (the production path);
HNSW (CPU only: FAISS has no GPU HNSW) is built directly.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raywse.core.io import write_json_atomic  # noqa: E402
from raywse.index.faiss_index import EmbeddingIndex, IndexConfig  # noqa: E402

K = 10
NUM_CENTRES = 1_000  # Gaussian blobs; SPREAD is the per-coordinate noise std (centres are N(0, 1)): blobs overlap
SPREAD = 1.0
HNSW_M = 32
HNSW_EF_SEARCH = 64
SINGLE_QUERIES = 100  # one-at-a-time queries for the latency percentiles
METHOD_RANK = {"numpy": 0, "flat": 1, "ivf": 2, "hnsw": 3}  # table order
READING = (
    "Reading: FAISS FlatIP is faster than the NumPy matmul + argpartition brute force, so the exact path stays "
    "FAISS. IVF pays at build time (k-means, then assigning every vector to one of nlist centroids: minutes at 1M "
    "on 2 CPU cores; the GPU path is meant for that) for queries orders of magnitude faster than exact at 1M. Recall "
    "rises with n because the number of blobs is fixed: at 10k a blob holds ~10 points and a query's neighbours "
    "straddle many IVF lists; at 1M they sit in its own blob. HNSW with efSearch 64 loses recall at 1M (efSearch, "
    "its recall knob, is not swept here). Below the default exact_threshold (50k) an exact query costs under ~1 ms."
)


def clustered(n: int, dim: int, centres: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    """Points around random centres (so neighbourhoods exist and recall is meaningful), L2-normalised."""
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centres[rng.integers(0, len(centres), m)] + spread * rng.standard_normal((m, dim), dtype=np.float32)
        out[start : start + m] = block
    faiss.normalize_L2(out)
    return out


def numpy_topk(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 50) -> np.ndarray:
    """Brute force: matmul + argpartition + sort of the top k, in query chunks (bounded memory)."""
    out = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ base.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start : start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def latency(search, queries: np.ndarray, batch_s: float | None = None) -> dict:
    """Batch (all queries in one call, unless already timed) and single-query latencies, in milliseconds."""
    if batch_s is None:
        _, batch_s = timed(search, queries)
    singles = []
    with threadpool_limits(1):  # one request per core, as a server would run them (no OpenMP/BLAS fan-out)
        for q in queries[:SINGLE_QUERIES]:
            start = time.perf_counter()
            search(q[None])
            singles.append(time.perf_counter() - start)
    return {
        "batch_ms_per_query": 1e3 * batch_s / len(queries),
        "batch_total_s": batch_s,
        "single_p50_ms": 1e3 * float(np.median(singles)),
        "single_p99_ms": 1e3 * float(np.percentile(singles, 99)),
    }


def rows_of(index: EmbeddingIndex, ids: list[list[str | None]]) -> np.ndarray:
    pos = {m: i for i, m in enumerate(index.ids)}
    return np.array([[pos.get(m, -1) for m in row] for row in ids])


def bench_size(n: int, dim: int, num_queries: int, seed: int, nprobes: tuple[int, ...], hnsw: bool) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((NUM_CENTRES, dim), dtype=np.float32)
    base = clustered(n, dim, centres, rng, SPREAD)
    queries = clustered(num_queries, dim, centres, rng, SPREAD)
    ids = [str(i) for i in range(n)]
    result: dict = {"n": n, "dim": dim, "queries": num_queries}

    truth, numpy_s = timed(numpy_topk, base, queries, K)
    result["numpy"] = latency(partial(numpy_topk, base, k=K), queries, numpy_s) | {"recall@10": 1.0}

    flat, build_s = timed(EmbeddingIndex.build, ids, base, "bench", IndexConfig(exact_threshold=n + 1))
    found, _ = flat.search(queries, K)
    result["flat"] = {"build_s": build_s, "recall@10": recall(rows_of(flat, found), truth)}
    result["flat"] |= latency(partial(flat.search, k=K), queries)
    del flat
    gc.collect()

    ivf, build_s = timed(EmbeddingIndex.build, ids, base, "bench", IndexConfig(exact_threshold=0))
    nlist = faiss.extract_index_ivf(ivf.index).nlist
    for nprobe in nprobes:
        faiss.ParameterSpace().set_index_parameter(ivf.index, "nprobe", nprobe)
        found, _ = ivf.search(queries, K)
        entry = {"build_s": build_s, "nlist": nlist, "nprobe": nprobe, "recall@10": recall(rows_of(ivf, found), truth)}
        result[f"ivf_nprobe{nprobe}"] = entry | latency(partial(ivf.search, k=K), queries)
    del ivf
    gc.collect()

    if hnsw:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        _, build_s = timed(index.add, base)
        index.hnsw.efSearch = HNSW_EF_SEARCH
        _, found = index.search(queries, K)
        result["hnsw"] = {
            "build_s": build_s,
            "M": HNSW_M,
            "efSearch": HNSW_EF_SEARCH,
            "recall@10": recall(found, truth),
        }
        result["hnsw"] |= latency(partial(index.search, k=K), queries)
    return result


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s*(.+)", lscpu)
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "faiss": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(),
        "gpus": faiss.get_num_gpus(),
        "numpy": np.__version__,
        "load_avg_at_start": os.getloadavg()[0],
    }


def markdown(report: dict) -> str:
    m = report["machine"]
    setup = (
        f"Command: `{report['command']}` ({report['seconds']:.0f} s). Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['gpus']} GPUs, faiss {m['faiss']}; load average {m['load_avg_at_start']:.1f} at start (a shared box: "
        f"latencies are upper bounds). Data: {NUM_CENTRES} overlapping Gaussian blobs (noise std {SPREAD} per "
        f"coordinate, centres N(0, 1)), L2-normalised, dim {report['dim']}, {report['queries']} queries, k={K}; "
        f"recall@10 vs exact. IVF via `EmbeddingIndex` (nlist ~4*sqrt(n), k-means on 64 points per list); HNSW "
        f"M={HNSW_M}, efSearch={HNSW_EF_SEARCH}, CPU only. Batch = all queries in one call; single = one query per "
        f"call (first {SINGLE_QUERIES}), 1 thread."
    )
    lines = [
        "## FAISS",
        "",
        textwrap.fill(setup, 120),
        "",
        "| n | method | build s | batch ms/query | single p50 ms | single p99 ms | recall@10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in report["sizes"]:
        methods = [k for k, v in size.items() if isinstance(v, dict)]
        methods.sort(key=lambda k: (METHOD_RANK[k.split("_")[0]], size[k].get("nprobe", 0)))
        for name in methods:
            r = size[name]
            label = name if "nprobe" not in r else f"ivf (nlist {r['nlist']}, nprobe {r['nprobe']})"
            build = f"{r['build_s']:.2f}" if "build_s" in r else "-"
            lines.append(
                f"| {size['n']:,} | {label} | {build} | {r['batch_ms_per_query']:.3f} | {r['single_p50_ms']:.2f} "
                f"| {r['single_p99_ms']:.2f} | {r['recall@10']:.3f} |"
            )
    lines += ["", textwrap.fill(READING, 120)]
    return "\n".join(lines) + "\n"


def write_readme_section(section: str, readme: Path) -> None:
    """Replace (or append) the "## FAISS" section, leaving the other sections alone."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## FAISS\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    readme.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="FAISS build/query latency and recall")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW above this size")
    parser.add_argument("--out", default=str(ROOT / "bench/results/faiss.json"))
    parser.add_argument("--readme", default=str(ROOT / "bench/README.md"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = {"command": " ".join(["python", "bench/bench_faiss.py", *(argv or sys.argv[1:])]), "machine": machine()}
    report |= {"dim": args.dim, "queries": args.queries, "k": K, "sizes": []}
    for n in args.sizes:
        size = bench_size(n, args.dim, args.queries, seed=n, nprobes=tuple(args.nprobe), hnsw=n <= args.hnsw_max)
        report["sizes"].append(size)
        print(json.dumps(size), flush=True)
        gc.collect()
    report["seconds"] = time.perf_counter() - start
    write_json_atomic(report, args.out)
    write_readme_section(markdown(report), Path(args.readme))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
