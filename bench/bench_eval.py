"""Evaluation ranking benchmark, one run: the retrieval suite's shared rankings against per-setting sorting.

Usage: ``python bench/bench_eval.py --report RUN/report --zoo RUN/zoo [--out bench/results/eval.json]``, on the saved
embeddings of an evaluation (``RUN/report/embeddings/*.parquet``; the demo writes them).

For every embedder, on the ``held_out`` setting (every pooled held-out query against the models outside its lineage,
relevant = same task, learned), side by side:

(a) ``ranked_relevance`` as the suite runs it: one float64 similarity product per block of queries and one sort of
    every model per query (:class:`~raywse.eval.suite.Rankings`), the database a mask over that order;
(b) the reference it replaced: per query, the candidates' similarities as a fancy-indexed float32 product and a
    ``np.lexsort`` of (tie key, −cosine).

They agree but where two similarities differ in the last float32 bit (``queries_identical``: the share of queries
whose ranked relevance is identical). Then (c): the whole ``retrieval_suite`` of the embedder, which
ranks the same queries in 14 settings (a's sorts are shared between them; b would sort again in each). And (d): the
structure probe's k-means of every held-out split as :func:`~raywse.metrics.clustering_metrics` runs it (float64,
without the columns zero in every row) against the reference it replaced (the float32 rows as they are, which
scikit-learn upcasts block by block), with the share of splits whose scores (ARI, NMI, purity) agree exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from raywse.core.artifacts import read_zoo_manifest
from raywse.core.embeddings import read_embeddings, table_vectors
from raywse.eval.config import POOLED
from raywse.eval.probes import held_masks
from raywse.eval.suite import ranked_relevance, retrieval_suite, tie_keys
from raywse.eval.view import zoo_view
from raywse.metrics import cluster_scores, clustering_metrics, normalize

sys.path.insert(0, str(Path(__file__).parent))
from _machine import load, machine  # noqa: E402


def reference_ranked_relevance(z, queries, database, relevant, seed=0):
    """The pre-``Rankings`` ranking: a fancy-indexed product and a lexsort per query and setting."""
    out = []
    for q in queries:
        db = np.flatnonzero(database(q))
        candidates = db[db != q]
        keys = tie_keys(seed, q, len(z))[candidates]
        out.append(relevant(q, candidates[np.lexsort((keys, -(z[candidates] @ z[q])))]))
    return out


def reference_kmeans(z, labels, seed=0):
    """The k-means of the structure probe before session 23: the float32 rows, every column."""
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=len(np.unique(labels)), n_init=10, random_state=seed).fit_predict(normalize(z))


def time_clustering(z, view) -> dict:
    """(d) of the module docstring: seconds of each way over the held-out splits, and the share of splits whose
    scores agree exactly."""
    splits = [np.flatnonzero(mask) for _, mask in held_masks(view)]
    start = time.perf_counter()
    now = [clustering_metrics(z[idx], view.task[idx]) for idx in splits]
    t_now = time.perf_counter() - start
    start = time.perf_counter()
    before = [reference_kmeans(z[idx], view.task[idx]) for idx in splits]
    t_before = time.perf_counter() - start
    same = [scores == cluster_scores(view.task[idx], c) for scores, idx, c in zip(now, splits, before, strict=True)]
    return {
        "kmeans_s": round(t_now, 2), "kmeans_reference_s": round(t_before, 2),
        "kmeans_ratio": round(t_before / t_now, 2), "kmeans_splits_identical": round(float(np.mean(same)), 4),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", required=True, help="an evaluation's output directory")
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "eval.json"))
    args = ap.parse_args()
    rows = read_zoo_manifest(args.zoo)
    results = {"machine": machine(), "load_before": load(), "report": args.report, "embedders": {}}
    for path in sorted((Path(args.report) / "embeddings").glob("*.parquet")):
        table = read_embeddings(path)
        z = normalize(table_vectors(table))
        view = zoo_view(rows, table.column("model_id").to_pylist())
        held = np.flatnonzero(view.held_out & view.learned)
        held = held[np.isin(view.split[held], POOLED) & (view.parent[held] == "")]

        def same_task(q, idx, view=view):
            return (view.task[idx] == view.task[q]) & view.learned[idx]

        start = time.perf_counter()
        shared = ranked_relevance(z, held, view.unrelated, same_task)
        t_shared = time.perf_counter() - start
        start = time.perf_counter()
        reference = reference_ranked_relevance(z, held, view.unrelated, same_task)
        t_reference = time.perf_counter() - start
        same = float(np.mean([np.array_equal(a, b) for a, b in zip(shared, reference, strict=True)]))
        start = time.perf_counter()
        retrieval_suite(table_vectors(table), view)
        t_suite = time.perf_counter() - start
        results["embedders"][path.stem] = {
            "models": len(z), "dims": int(z.shape[1]), "queries": len(held),
            "held_out_shared_s": round(t_shared, 3), "held_out_reference_s": round(t_reference, 3),
            "ratio": round(t_reference / t_shared, 2), "queries_identical": round(same, 4),
            "suite_s": round(t_suite, 2), **time_clustering(z, view),
        }  # fmt: skip
        print(path.stem, results["embedders"][path.stem], flush=True)
    results["load_after"] = load()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
