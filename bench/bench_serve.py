"""Search service benchmark, one run: ``POST /search`` latency and throughput at 1 and 8 clients against the cold
command-line ``raywse search`` (a new process per query; zoo checkpoints with the on-disk probe cache warm and
empty, and, when the run has one, foreign ones), on the same index and encoder.

Usage: ``python bench/bench_serve.py --run runs/demo [--requests 200] [--cli-runs 3] [--port 8790]``. ``--run`` is a
finished main-job directory (its ``index/``, ``train/encoder/`` and ``zoo/``). The service is ``raywse serve`` with
one replica, started in its own process group and stopped at the end; every request uploads one of 16 zoo
checkpoints (``k=10``). Latency is client-side wall time per request (urllib over loopback). Writes
``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _machine import load, machine

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"


def post(url: str, data: bytes) -> float:
    """Seconds for one ``POST`` (raises on a non-200 answer)."""
    start = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=120) as resp:
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"status {resp.status}")
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def clients(url: str, uploads: list[bytes], n: int, requests: int) -> dict:
    """``requests`` searches from ``n`` concurrent clients: throughput and latency percentiles (ms)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        latencies = list(pool.map(lambda i: post(url, uploads[i % len(uploads)]), range(requests)))
    wall = time.perf_counter() - start
    return {
        "clients": n,
        "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * percentile(latencies, 0.99), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--cli-runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8790)
    args = ap.parse_args()
    run = args.run.resolve()
    index, encoder, zoo = run / "index", run / "train" / "encoder", run / "zoo"
    files = sorted((zoo / "models").glob("*.safetensors"))[:16]
    uploads = [f.read_bytes() for f in files]
    raywse = str(Path(sys.executable).with_name("raywse"))
    result: dict = {"machine": machine(), "load_before": load(), "run": str(run)}

    # the cold command line: zoo checkpoints (probed on their task's dataset; with the probe set cached on disk, as
    # after any graphify on this machine, and with an empty cache) and foreign ones (Gaussian probes)
    foreign = sorted((run / "foreign" / "checkpoints").glob("*.safetensors"))[:16]

    def cli_query(checkpoint: Path, cache_dir: str) -> float:
        cmd = [raywse, "search", str(checkpoint), "--index", str(index), "--encoder", str(encoder), "--zoo",
               str(zoo), "-k", "10"]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=os.environ | {"RAYWSE_CACHE_DIR": cache_dir})
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as cache:
        for key, queries, warm in (("cli_search_s", files, True), ("cli_search_empty_cache_s", files, False),
                                   ("cli_search_foreign_s", foreign, True)):  # fmt: skip
            queries = [queries[i % len(queries)] for i in range(args.cli_runs)] if queries else []
            if warm:
                for checkpoint in queries:  # untimed: fills the probe cache for these queries' datasets
                    cli_query(checkpoint, cache)
            cli = []
            for checkpoint in queries:
                with tempfile.TemporaryDirectory() as empty:
                    cli.append(cli_query(checkpoint, cache if warm else empty))
            result[key] = [round(s, 2) for s in cli]

    cmd = [raywse, "serve", "--index", str(index), "--encoder", str(encoder), "--zoo", str(zoo), "--port",
           str(args.port)]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{args.port}"
    try:
        start = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(1)
            if proc.poll() is not None or time.perf_counter() - start > 180:
                raise RuntimeError("the service did not come up")
        result["service_start_s"] = round(time.perf_counter() - start, 1)
        search = f"{url}/search?k=10"
        clients(search, uploads, 2, 20)  # warm-up
        result["one_client"] = clients(search, uploads, 1, args.requests)
        result["eight_clients"] = clients(search, uploads, 8, args.requests)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    result["load_after"] = load()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
