"""Lineage search: the first-layer sketches alone, the lineage part's structure share, and why it is a part of its own.

Usage: ``python bench/bench_lineage.py --run runs/demo``. ``--run`` is a finished main-job directory: its zoo and
raywse's saved evaluation embeddings. The zoo's graphs are rebuilt with their symmetries randomised as the evaluation
randomises them (the same seed), and every row is scored with the evaluation's own lineage setting (fine-tuned
children against every model outside their run; relevant = the parent's run and the siblings), overall and per family:

- ``first_layer_moments`` (the second-moment sketch: session 10's lineage reference, now an unprobed network's
  fingerprint) and ``first_layer_sketch`` (the kernel sketch) at several ``σ``, each with the score ``σ`` was chosen
  by: on the train split, each snapshot finding its run's other snapshots (mAP) — no test child is read for it;
- the encoder's lineage part, the sketch joined with the layer structure's code (``raywse.graph.structure``) at
  several structure shares — the share of 0.2 the encoder uses was picked on these test children;
- raywse's task embedding joined with the sketch in *one* vector at several shares (what a single index would trade:
  the summary's task columns and lineage).

Writes ``bench/results/lineage.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from _machine import load, machine
from torch_geometric.data import Batch

from raywse.core.artifacts import ReportFiles, RunLayout, read_zoo_manifest
from raywse.core.embeddings import read_embeddings, table_vectors
from raywse.eval.suite import _lineage, retrieval_suite
from raywse.eval.symmetries import randomised_graphs
from raywse.eval.view import zoo_view
from raywse.graph.kernels import kernel_shape_batches
from raywse.graph.lineage import first_layer_moments, first_layer_sketch
from raywse.graph.structure import structure_codes
from raywse.metrics import normalize

TASK_COLUMNS = {"cross_arch": "precision@10", "cross_family": "precision@10", "label_map": "precision@1"}


def embed(graphs: list, fn, dim: int, **kwargs) -> np.ndarray:
    """``fn(batch, dim, **kwargs)`` over ``graphs`` in batches of one kernel shape."""
    out = np.zeros((len(graphs), dim), dtype=np.float32)
    for rows in kernel_shape_batches(graphs, 256):
        out[rows] = fn(Batch.from_data_list([graphs[i] for i in rows]), dim, **kwargs).numpy()
    return out


#: The encoder's ``kinship_structure_weight``: the structure code's share of the lineage part's squared norm.
STRUCTURE_SHARE = 0.2


class LineageZoo:
    """One zoo's graphs with their symmetries randomised as the evaluation randomises them, its view, first-layer
    sketches, structure codes and fine-tuned children (those whose parent is in the zoo), for the experiments that
    choose a setting on one zoo and measure it on another."""

    def __init__(self, path: str, seed: int) -> None:
        rows = read_zoo_manifest(Path(path))
        self.path, self.view = path, zoo_view(rows, [r["model_id"] for r in rows])
        start = time.perf_counter()
        self.graphs = randomised_graphs(path, rows, seed)
        self.first = embed(self.graphs, first_layer_sketch, 1024, seed=seed)
        self.codes = embed(self.graphs, lambda batch, dim, seed: structure_codes(batch, dim, seed), 128, seed=seed)
        self.seconds = round(time.perf_counter() - start, 1)
        held, known = np.flatnonzero(self.view.held_out), set(self.view.ids)
        self.children = np.array([q for q in held if self.view.parent[q] in known], dtype=np.int64)

    def record(self) -> dict:
        return {"path": self.path, "models": len(self.graphs), "children": len(self.children), "build_s": self.seconds}


def two_zoo_parser(description: str, results: str) -> argparse.ArgumentParser:
    """The arguments every select-then-measure experiment takes (``results``: its file under ``results/``)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--select", required=True, help="the zoo the setting is chosen on")
    ap.add_argument("--measure", required=True, help="the zoo it is then measured on")
    ap.add_argument("--seed", type=int, default=0, help="the evaluation's seed (symmetries and tie-breaks)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / results))
    return ap


def two_zoos(zoo_class: type[LineageZoo], args: argparse.Namespace, command: str) -> tuple:
    """``(select zoo, measure zoo, result)``: torch on two threads, both zoos built, the result record begun
    (machine, load, ``command``, the zoos)."""
    torch.set_num_threads(2)
    result = {"machine": machine(), "load_at_start": load(), "command": command}
    select, measure = zoo_class(args.select, args.seed), zoo_class(args.measure, args.seed)
    result["zoos"] = {"select": select.record(), "measure": measure.record()}
    return select, measure, result


def lineage(z: np.ndarray, view, seed: int) -> dict:
    """Lineage mAP of unit-normalised ``z``, overall and per family of the child."""
    held = np.flatnonzero(view.held_out)
    known = set(view.ids)
    children = np.array([q for q in held if view.parent[q] in known], dtype=np.int64)
    zn = normalize(z)

    def score(queries: np.ndarray) -> float:
        return round(_lineage(zn, view, queries, lambda q: view.run != view.run[q], (1, 5, 10), 20, seed)["mAP"], 3)

    return {"all": score(children), **{f: score(children[view.family[children] == f])
                                       for f in sorted(set(view.family[children]))}}  # fmt: skip


def snapshots_map(z: np.ndarray, view) -> float:
    """Train split only: each snapshot's mAP at finding the other snapshots of its run (the ``σ`` criterion)."""
    train = np.flatnonzero(view.split == "train")
    zn, run = normalize(z)[train], view.run[train]
    sims = zn @ zn.T
    np.fill_diagonal(sims, -np.inf)
    aps = []
    for i in range(len(train)):
        relevant = run == run[i]
        relevant[i] = False
        if relevant.any():
            hits = relevant[np.argsort(-sims[i], kind="stable")][:-1]
            aps.append(float(((np.cumsum(hits) / np.arange(1, len(hits) + 1)) * hits).sum() / hits.sum()))
    return round(float(np.mean(aps)), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished main-job directory")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 2.5, 3.0, 4.0])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.4])
    ap.add_argument("--joined", type=float, nargs="+", default=[0.0, 0.2, 0.5])
    ap.add_argument("--seed", type=int, default=0, help="the evaluation's seed (symmetries and tie-breaks)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "lineage.json"))
    args = ap.parse_args()
    run = RunLayout(Path(args.run).resolve())
    table = read_embeddings(run.report / ReportFiles.EMBEDDINGS / "raywse.parquet")
    ids = table.column("model_id").to_pylist()
    rows = read_zoo_manifest(run.zoo)
    by_id = {r["model_id"]: r for r in rows}
    view = zoo_view(rows, ids)
    command = (f"python bench/bench_lineage.py --run {args.run} --sigmas {' '.join(map(str, args.sigmas))} "
               f"--shares {' '.join(map(str, args.shares))} --joined {' '.join(map(str, args.joined))} "
               f"--seed {args.seed}")  # fmt: skip
    result = {"machine": machine(), "load_at_start": load(), "command": command, "run": str(run.root),
              "models": len(ids)}  # fmt: skip
    start = time.perf_counter()
    graphs = randomised_graphs(run.zoo, [by_id[m] for m in ids], args.seed)
    result["randomise_s"] = round(time.perf_counter() - start, 1)

    moments = embed(graphs, first_layer_moments, 256, seed=args.seed)
    result["moments"] = {"dim": 256, "lineage": lineage(moments, view, args.seed)}
    print("moments:", result["moments"], flush=True)
    result["sketch"] = []
    for sigma in args.sigmas:
        start = time.perf_counter()
        sketch = embed(graphs, first_layer_sketch, 1024, seed=args.seed, sigma=sigma)
        took = round(time.perf_counter() - start, 1)
        row = {"sigma": sigma, "dim": 1024, "seconds": took, "train_snapshots_map": snapshots_map(sketch, view),
               "lineage": lineage(sketch, view, args.seed)}  # fmt: skip
        result["sketch"].append(row)
        print("sketch:", row, flush=True)

    sketch = embed(graphs, first_layer_sketch, 1024, seed=args.seed)  # the default σ, as the encoder uses it
    codes = embed(graphs, lambda batch, dim, seed: structure_codes(batch, dim, seed), 128, seed=args.seed)
    result["lineage_part"] = []
    for share in args.shares:
        part = np.hstack([np.sqrt(1 - share) * sketch, np.sqrt(share) * codes])
        row = {"structure_share": share, "lineage": lineage(part, view, args.seed)}
        result["lineage_part"].append(row)
        print("lineage part:", row, flush=True)

    z = normalize(table_vectors(table))
    result["joined"] = []
    for w in args.joined:
        joined = np.hstack([np.sqrt(1 - w) * z, np.sqrt(w) * sketch]).astype(np.float32)
        found = retrieval_suite(joined, view, seed=args.seed)
        row = {"weight": w, **{k: round(found[k][m], 3) for k, m in TASK_COLUMNS.items()},
               "lineage": round(found["lineage"]["mAP"], 3)}  # fmt: skip
        result["joined"].append(row)
        print("joined:", row, flush=True)
    result["load_at_end"] = load()
    Path(args.results).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
