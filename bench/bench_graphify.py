"""Graphify benchmark, one run: safetensors read ceiling, serial graphify, Ray Data graphify at a few batch sizes.

Usage: ``python bench/bench_graphify.py [--zoo DIR] [--preset small] [--out /tmp/raywse_bench_graphify]
[--batch-sizes 16,64,256] [--repeats 3]``. Without ``--zoo`` a zoo of the preset is built (once) and cached under
``--out/zoo_<preset>``. Writes ``bench/results/graphify.json``.

Measured, every checkpoint of the zoo each time (page cache warmed by one untimed read pass first):

(a) read ceiling: ``Path.read_bytes`` alone and ``raywse.core.io.load_checkpoint`` (read + safetensors parse), one
    process;
(b) serial: ``graphify_checkpoint`` on every file in one process (probed as graphify probes: a zoo model on its
    dataset's probe set), then Arrow conversion (``graphs_to_table``) and
    Parquet writes in shards of the default batch size (graphify's writer options, and pyarrow's defaults beside
    them);
(c) Ray Data: ``graphify(zoo, fresh_dir, GraphifyConfig(batch_size=b))`` end to end on a local Ray with 2 CPUs.
    Ray start-up (``ensure_ray(num_cpus=2)``) and a first full ``graphify`` at the default batch size (cold worker
    processes importing torch etc.) are timed separately; the driver-side manifest rebuild is re-timed on the output
    (``write_graph_manifest``, graphify's own) to show its share;
(d) reference: the work of graphify's batch UDF (graphify each checkpoint of a chunk, write its graphs as one shard;
    ``graphify_batch``) as plain ``@ray.remote`` tasks, one per ``batch_size`` chunk, without Ray Data (what Ray's
    parallelism alone gives; manifest not rebuilt).

(a) and (b) take the best of ``--repeats`` passes, each Ray Data batch size the best of ``--ray-repeats`` runs (the
machine is shared, so the load average is recorded beside every figure).

``--baseline-src DIR`` (a checkout of an earlier commit, e.g. ``git archive <commit> | tar -x -C DIR``) also times
(b)'s serial ``graphify_checkpoint`` pass with that checkout's ``raywse`` and with this tree's, alternated for
``--ab-rounds`` rounds (subprocesses with ``PYTHONPATH`` set to one checkout each, run from ``/`` so the working
directory cannot shadow it; each pass checks which ``raywse`` it imported): the speed-up is the median ratio of the
rounds, measured side by side in one run. ``--serial-only`` prints one pass's JSON and exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import ray
import torch
from _machine import load, machine

import raywse.graph.arrow as graph_arrow  # its PARQUET_OPTIONS are newer than some --baseline-src checkouts
from raywse.core.io import load_checkpoint, write_parquet_atomic
from raywse.core.ray_session import ensure_ray
from raywse.data.graphify import GraphifyConfig, graphify, graphify_batch, inputs_from_source, write_graph_manifest
from raywse.graph.checkpoint import graphify_checkpoint
from raywse.zoo.build import build_zoo
from raywse.zoo.datasets import probes_for_metadata
from raywse.zoo.plan import ZooConfig


def best_of(repeats: int, fn) -> tuple[float, object]:
    """Smallest wall time of ``repeats`` calls of ``fn`` and the last call's return value."""
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def serial_graphify(inputs: list) -> list:
    """Every checkpoint's graph, one after the other, probed as graphify probes it (a zoo model on its dataset)."""
    return [
        graphify_checkpoint(i.path, i.model_id, i.layer_spec,
                            functools.partial(probes_for_metadata, dataset=i.dataset, input_norm=i.input_norm))
        for i in inputs
    ]  # fmt: skip


def serial_arrow(graphs: list, out: Path, shard_size: int, options: dict) -> tuple[float, float, int]:
    """Seconds to convert ``graphs`` to Arrow tables and to write them as Parquet shards of ``shard_size`` with the
    writer ``options``, and the bytes written."""
    shutil.rmtree(out, ignore_errors=True)
    convert = write = 0.0
    for i, start in enumerate(range(0, len(graphs), shard_size)):
        t0 = time.perf_counter()
        table = graph_arrow.graphs_to_table(graphs[start : start + shard_size])
        t1 = time.perf_counter()
        write_parquet_atomic(table, out / f"shard-{i:05d}.parquet", **options)
        convert += t1 - t0
        write += time.perf_counter() - t1
    return convert, write, sum(p.stat().st_size for p in out.iterdir())


def side_by_side(zoo: Path, baseline: Path, rounds: int) -> dict:
    """Serial graphify passes of this tree and of the ``baseline`` checkout, alternated for ``rounds`` rounds (each
    pass a subprocess importing one checkout's ``raywse``; which goes first alternates too), so both see the same
    spells of load; the speed-up is the median of the rounds' ratios."""
    trees = {"this_tree": Path(__file__).resolve().parents[1], "baseline": baseline.resolve()}
    passes: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(rounds):
        for name in sorted(trees, reverse=round_ % 2 == 1):
            cmd = [sys.executable, __file__, "--serial-only", "--zoo", str(zoo), "--repeats", "1"]
            done = subprocess.run(cmd, env=os.environ | {"PYTHONPATH": str(trees[name])}, check=True,
                                  capture_output=True, text=True, cwd="/")  # fmt: skip
            run = json.loads(done.stdout.strip().splitlines()[-1])
            if Path(run["raywse"]) != trees[name]:
                raise RuntimeError(f"the {name} pass imported raywse from {run['raywse']}, not {trees[name]}")
            passes[name].append(run["graphify_s"])
    ratios = [b / t for t, b in zip(passes["this_tree"], passes["baseline"], strict=True)]
    return {"src": str(baseline), "rounds": rounds, "this_tree_s": passes["this_tree"],
            "baseline_s": passes["baseline"], "speedup_per_round": [round(r, 3) for r in ratios],
            "speedup": round(statistics.median(ratios), 2), "load": load()}  # fmt: skip


#: graphify's own batch UDF as a plain Ray task (no Ray Data): graphify a chunk, write it as one shard.
batch_task = ray.remote(num_cpus=1)(graphify_batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--zoo", help="existing zoo directory (default: build the preset under --out)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--out", default="/tmp/raywse_bench_graphify")
    ap.add_argument("--batch-sizes", default="16,64,256")
    ap.add_argument("--repeats", type=int, default=3, help="passes of (a) and (b); the best counts")
    ap.add_argument("--ray-repeats", type=int, default=2, help="runs per Ray Data batch size; the best counts")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "graphify.json"))
    ap.add_argument("--baseline-src", help="checkout of an earlier commit whose serial graphify is timed alongside")
    ap.add_argument("--ab-rounds", type=int, default=3, help="alternated passes of each tree with --baseline-src")
    ap.add_argument("--serial-only", action="store_true", help="time the serial graphify pass of --zoo, print JSON")
    args = ap.parse_args()
    if args.serial_only:
        torch.set_num_threads(1)
        inputs = inputs_from_source(Path(args.zoo))
        t, _ = best_of(args.repeats, lambda: serial_graphify(inputs))
        src = str(Path(sys.modules["raywse"].__file__).parent.parent)  # which checkout ran: the record says
        print(json.dumps({"graphify_s": round(t, 3), "graphify_ckpt_per_s": round(len(inputs) / t, 1), "raywse": src}))
        return
    out = Path(args.out)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    result: dict = {"machine": machine(), "load_start": load()}

    zoo = Path(args.zoo) if args.zoo else out / f"zoo_{args.preset}"
    if not args.zoo:
        t0 = time.perf_counter()
        build_zoo(ZooConfig.preset(args.preset, num_cpus=2), zoo, progress=False)
        result["zoo_build_s"] = round(time.perf_counter() - t0, 2)  # ~0 when cached
        if ray.is_initialized():  # measure Ray start-up below from a cold start
            ray.shutdown()
    inputs = inputs_from_source(zoo)
    paths = [i.path for i in inputs]
    total_bytes = sum(os.path.getsize(p) for p in paths)
    n = len(inputs)
    result["zoo"] = {"dir": str(zoo), "preset": None if args.zoo else args.preset, "files": n, "bytes": total_bytes,
                     "mean_file_bytes": round(total_bytes / n)}  # fmt: skip
    print(f"zoo {zoo}: {n} checkpoints, {total_bytes / 1e6:.1f} MB")
    torch.set_num_threads(1)  # as a Ray Data task runs (num_cpus=1 sets OMP_NUM_THREADS=1)

    # (a) read ceiling, warm page cache
    for p in paths:
        Path(p).read_bytes()
    t_bytes, _ = best_of(args.repeats, lambda: [Path(p).read_bytes() for p in paths])
    t_load, _ = best_of(args.repeats, lambda: [load_checkpoint(p) for p in paths])
    result["read"] = {
        "read_bytes_s": round(t_bytes, 3),
        "read_bytes_ckpt_per_s": round(n / t_bytes, 1),
        "read_bytes_MB_per_s": round(total_bytes / 1e6 / t_bytes, 1),
        "load_checkpoint_s": round(t_load, 3),
        "load_checkpoint_ckpt_per_s": round(n / t_load, 1),
        "load_checkpoint_MB_per_s": round(total_bytes / 1e6 / t_load, 1),
        "load": load(),
    }
    print("read:", json.dumps(result["read"]))

    # (b) serial graphify + Arrow conversion + Parquet writes
    t_graph, graphs = best_of(args.repeats, lambda: serial_graphify(inputs))

    def arrow_passes(built: list, options: dict) -> tuple[float, float, int]:  # the best by convert + write
        shards = GraphifyConfig().batch_size
        passes = [serial_arrow(built, out / "serial_shards", shards, options) for _ in range(args.repeats)]
        return min(passes, key=lambda p: p[0] + p[1])

    _, write_default, bytes_default = arrow_passes(graphs, {})  # pyarrow's defaults, beside graphify's own
    convert, write, shard_bytes = arrow_passes(graphs, graph_arrow.PARQUET_OPTIONS)
    serial_total = t_graph + convert + write
    result["serial"] = {
        "graphify_s": round(t_graph, 3),
        "graphify_ckpt_per_s": round(n / t_graph, 1),
        "arrow_convert_s": round(convert, 3),
        "parquet_write_s": round(write, 3),
        "parquet_bytes": shard_bytes,
        "parquet_write_pyarrow_defaults_s": round(write_default, 3),
        "parquet_bytes_pyarrow_defaults": bytes_default,
        "shard_size": GraphifyConfig().batch_size,
        "total_s": round(serial_total, 3),
        "total_ckpt_per_s": round(n / serial_total, 1),
        "graph_nodes_mean": round(sum(int(g.num_nodes) for g in graphs) / n, 1),
        "graph_edges_mean": round(sum(int(g.edge_index.shape[1]) for g in graphs) / n, 1),
        "load": load(),
    }
    print("serial:", json.dumps(result["serial"]))
    del graphs
    if args.baseline_src:
        result["baseline"] = side_by_side(zoo, Path(args.baseline_src), args.ab_rounds)
        print("baseline:", json.dumps(result["baseline"]))

    # (c) Ray Data, 2 CPUs
    t0 = time.perf_counter()
    ensure_ray(num_cpus=2)
    startup = time.perf_counter() - t0
    warm_dir = out / "ray_warmup"
    shutil.rmtree(warm_dir, ignore_errors=True)
    load_before = load()
    t0 = time.perf_counter()
    graphify(zoo, warm_dir, GraphifyConfig(progress=False))
    first = time.perf_counter() - t0
    result["ray"] = {
        "startup_s": round(startup, 2),
        "first_graphify_s": round(first, 2),  # cold worker processes, default batch size
        "first_graphify_ckpt_per_s": round(n / first, 1),
        "first_graphify_load_before": load_before,
        "runs": [],
    }
    print(f"ray: start-up {startup:.2f} s, first (cold) graphify of all files {first:.2f} s")
    for bs in batch_sizes:
        run_dir = out / f"ray_bs{bs}"
        times = []
        load_before = load()
        for _ in range(args.ray_repeats):
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            res = graphify(zoo, run_dir, GraphifyConfig(batch_size=bs, progress=False))
            times.append(time.perf_counter() - t0)
        elapsed = min(times)
        t1 = time.perf_counter()
        write_graph_manifest(Path(run_dir))  # the driver-side manifest rebuild graphify ends with, re-timed alone
        manifest_s = time.perf_counter() - t1
        run = {
            "batch_size": bs,
            "shards": -(-n // bs),
            "written": res.written,
            "errors": len(res.errors),
            "s": round(elapsed, 3),
            "all_s": [round(t, 3) for t in times],
            "ckpt_per_s": round(n / elapsed, 1),
            "manifest_rebuild_s": round(manifest_s, 3),
            "speedup_vs_serial_graphify": round(t_graph / elapsed, 2),
            "speedup_vs_serial_total": round(serial_total / elapsed, 2),
            "fraction_of_load_checkpoint_ceiling": round(t_load / elapsed, 3),
            "load_before": load_before,
            "load_after": load(),
        }
        result["ray"]["runs"].append(run)
        print("ray run:", json.dumps(run))
        if res.written != n:
            print(f"WARNING: {n - res.written} checkpoints not written ({len(res.errors)} errors)")
    # (d) reference: the same UDF as plain Ray tasks (one task per batch_size chunk), i.e. Ray without Ray Data
    df = pd.DataFrame([dataclasses.asdict(i) for i in inputs])  # every field graphify_batch reads
    task_runs = []
    for bs in batch_sizes:
        run_dir = out / f"tasks_bs{bs}"
        best = float("inf")
        for _ in range(args.ray_repeats):
            shutil.rmtree(run_dir, ignore_errors=True)
            t0 = time.perf_counter()
            status = pd.concat(ray.get([batch_task.remote(df.iloc[s : s + bs], str(run_dir)) for s in range(0, n, bs)]))
            best = min(best, time.perf_counter() - t0)
            if (status["status"] != "ok").any():  # a broken pass would time nothing
                raise RuntimeError(f"plain tasks failed: {status[status['status'] != 'ok'].iloc[0].to_dict()}")
        task_runs.append({"batch_size": bs, "s": round(best, 3), "ckpt_per_s": round(n / best, 1),
                          "speedup_vs_serial_total": round(serial_total / best, 2), "load_after": load()})  # fmt: skip
        print("ray tasks:", json.dumps(task_runs[-1]))
    result["ray"]["plain_tasks"] = task_runs
    result["ray"]["startup_plus_best_run_s"] = round(startup + min(r["s"] for r in result["ray"]["runs"]), 2)
    result["load_end"] = load()
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
