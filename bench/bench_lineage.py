"""Lineage in raywse's embedding: what appending the first-layer sketch to it would buy and cost.

Usage: ``python bench/bench_lineage.py --run runs/demo [--dim 64] [--weights 0 0.2 0.3 0.4 0.5]``.
``--run`` is a finished main-job directory: its zoo, and raywse's saved evaluation embeddings (symmetries randomised
as the evaluation randomises them, the same seed). Each model's :func:`~raywse.graph.lineage.first_layer_sketch`
``φ`` (``--dim`` wide) is computed on the same randomised graphs and joined to raywse's embedding ``z`` as its tensor
square, ``[√(1 − w) z, √w vec(φ φᵀ)]``, so that cosines add as ``(1 − w) cos z + w (cos φ)²`` — the square keeps the
weak chance similarity of unrelated sketches (≈ ±0.2) from blurring the ranking, a relative's (≈ 0.9) stays. Every
weight ``w`` is scored with the evaluation's own suite and accuracy probes (the summary's columns but the foreign
ones), and the sketch alone (``--dim-alone`` wide) is scored on lineage. Writes ``bench/results/lineage.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _machine import load, machine

from raywse.core.artifacts import ReportFiles, RunLayout, read_zoo_manifest
from raywse.core.embeddings import read_embeddings, table_vectors
from raywse.eval.probes import accuracy_metrics
from raywse.eval.suite import retrieval_suite
from raywse.eval.summary import summarize
from raywse.eval.symmetries import randomised_graphs
from raywse.eval.view import zoo_view
from raywse.models.baselines import FirstLayerSketchEmbedder

COLUMNS = ("task_p10_cross_arch", "cross_family_p10", "label_map_p1", "lineage_map", "acc_tau_pooled", "acc_tau_within")


def unit(z: np.ndarray) -> np.ndarray:
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def tensor_square(phi: np.ndarray) -> np.ndarray:
    """``[n, d(d+1)/2]``: the upper triangle of each ``φ φᵀ``, off-diagonal entries × √2 (inner products square)."""
    rows, cols = np.triu_indices(phi.shape[1])
    return phi[:, rows] * phi[:, cols] * np.where(rows == cols, 1.0, np.sqrt(2.0))


def scores(z: np.ndarray, view, seed: int) -> dict:
    """The summary's columns (foreign ones aside) for embeddings ``z`` of ``view``'s models."""
    found = retrieval_suite(z, view, seed=seed)
    for split, vals in accuracy_metrics(z, view, seed).items():
        found.setdefault(split, {}).update(vals)
    row = summarize({"x": found})["x"]
    return {c: row[c] for c in COLUMNS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a finished main-job directory")
    ap.add_argument("--dim", type=int, default=64, help="sketch width joined to raywse (its square: dim(dim+1)/2)")
    ap.add_argument("--dim-alone", type=int, default=256, help="sketch width scored alone")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--seed", type=int, default=0, help="the evaluation's seed (symmetries and tie-breaks)")
    ap.add_argument("--results", default=str(Path(__file__).parent / "results" / "lineage.json"))
    args = ap.parse_args()
    run = RunLayout(Path(args.run).resolve())
    table = read_embeddings(run.report / ReportFiles.EMBEDDINGS / "raywse.parquet")
    ids = table.column("model_id").to_pylist()
    rows = read_zoo_manifest(run.zoo)
    by_id = {r["model_id"]: r for r in rows}
    view = zoo_view(rows, ids)
    weights = " ".join(map(str, args.weights))
    command = (f"python bench/bench_lineage.py --run {args.run} --dim {args.dim} --dim-alone {args.dim_alone} "
               f"--weights {weights} --seed {args.seed}")  # fmt: skip
    result = {"machine": machine(), "load_at_start": load(), "command": command, "run": str(run.root),
              "models": len(ids)}  # fmt: skip
    start = time.perf_counter()
    graphs = randomised_graphs(run.zoo, [by_id[m] for m in ids], args.seed)
    result["randomise_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    alone = FirstLayerSketchEmbedder(dim=args.dim_alone, seed=args.seed).embed(graphs)
    result["sketch_alone_s"] = round(time.perf_counter() - start, 1)
    result["sketch_alone"] = {"dim": args.dim_alone, **scores(alone, view, args.seed)}
    print("sketch alone:", result["sketch_alone"], flush=True)
    z = unit(table_vectors(table))
    code = tensor_square(FirstLayerSketchEmbedder(dim=args.dim, seed=args.seed).embed(graphs))
    result["joined"] = []
    for w in args.weights:
        joined = np.hstack([np.sqrt(1 - w) * z, np.sqrt(w) * code]) if w else z
        row = {"weight": w, "dims": joined.shape[1], **scores(joined.astype(np.float32), view, args.seed)}
        result["joined"].append(row)
        print(row, flush=True)
    result["load_at_end"] = load()
    Path(args.results).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
