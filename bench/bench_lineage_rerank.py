"""Lineage search re-ranked by matching first-layer neurons: chosen on one zoo, then measured on another.

Usage: ``python bench/bench_lineage_rerank.py --select /tmp/zval --measure /tmp/zsmall`` (two zoo directories, e.g.
``raywse zoo --out /tmp/zval --preset small --seed 1`` and the demo's ``--seed 0`` zoo). Every model of each zoo is
rebuilt with its symmetries randomised as the evaluation randomises them and scored with the evaluation's own lineage
setting (fine-tuned children against every model outside their run; relevant = the parent's run and the siblings).

The experiment (session 25; the chosen setting is now :mod:`raywse.graph.first_layer_match`, whose first layers
and ``kernel`` similarity this script calls): the lineage part as it stands
(:meth:`~raywse.models.encoder.NeuralGraphEncoder.kinship_form`: the first-layer sketch joined with the structure
code) ranks every model; its first ``depth`` are then re-scored as ``(1 − share) · cosine + share · matched``, where
``matched`` compares the two networks' first layers neuron by neuron. A first-layer neuron's unit incoming weights
and bias ``u_i`` are read as the first-layer sketch reads them (input nodes keep their identity); the two sets are
paired by an optimal assignment (Hungarian) on ``|u_i · v_j|``, and ``matched`` is the mean paired value over the
larger set (``mean_cos``), or of ``exp(−σ²(1 − |u_i · v_j|))`` (``kernel``, ``σ = 3``); networks whose inputs differ
score 0. It is exactly invariant to permuting, rescaling and sign-flipping hidden neurons, as the sketch is, but it
pairs neurons one to one: a fine-tuned child keeps each of its parent's neurons near where it was, while two networks
trained from different initialisations share only the *distribution* of their directions, which is what a sketch of
the set compares.

On the ``--select`` zoo: every kind × share at depth 50, then the best kind and share at every depth; the best of
all is then scored once on the ``--measure`` zoo, beside the lineage part as it stands. Writes
``bench/results/lineage_rerank.json``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from _machine import load
from bench_lineage import STRUCTURE_SHARE, LineageZoo, two_zoo_parser, two_zoos
from scipy.optimize import linear_sum_assignment

from raywse.eval.suite import Rankings, _lineage, scored
from raywse.graph.first_layer_match import FirstLayer, first_layer_of, matched_similarity

KS, CURVE_K = (1, 5, 10), 20  # the evaluation's lineage setting


def matched(a: FirstLayer | None, b: FirstLayer | None, kind: str) -> float:
    """The neuron-matched similarity of two first layers (the module docstring); 0 if either is missing. ``kernel`` is
    the library's :func:`~raywse.graph.first_layer_match.matched_similarity`."""
    if a is None or b is None:
        return 0.0
    if kind == "kernel":
        return matched_similarity(a, b)
    if (a.width, a.cells) != (b.width, b.cells):
        return 0.0
    cos = np.abs(a.directions @ b.directions.T)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    return float(cos[rows, cols].sum() / max(len(a.directions), len(b.directions)))


class Zoo(LineageZoo):
    """One zoo's randomised graphs, view, lineage part and fine-tuned children."""

    def __init__(self, path: str, seed: int) -> None:
        super().__init__(path, seed)
        a = STRUCTURE_SHARE
        self.kin = np.hstack([math.sqrt(1 - a) * self.first, math.sqrt(a) * self.codes]).astype(np.float32)
        self.rankings, self.seed = Rankings(self.kin, seed), seed
        self.rankings.prepare(self.children)
        self._first: dict[int, FirstLayer | None] = {}
        self._matched: dict[tuple[int, int, str], float] = {}

    def candidates(self, q: int) -> np.ndarray:
        """Every model outside ``q``'s run, best first by the lineage part."""
        order = self.rankings.order(q)
        return order[self.view.run[order] != self.view.run[q]]

    def similarity(self, q: int, c: int, kind: str) -> float:
        """:func:`matched` of models ``q`` and ``c`` (first layers read and pairs matched once)."""
        if (q, c, kind) not in self._matched:
            for i in (q, c):
                if i not in self._first:
                    self._first[i] = first_layer_of(self.graphs[i])
            self._matched[q, c, kind] = matched(self._first[q], self._first[c], kind)
        return self._matched[q, c, kind]

    def lineage(self, kind: str, share: float, depth: int) -> dict:
        """Lineage mAP (overall, per family of the child), the first ``depth`` candidates re-ranked."""
        view, relevance = self.view, {}
        for q in self.children.tolist():
            order = self.candidates(q)
            top = order[:depth]
            if share > 0:
                score = (1 - share) * (self.kin[top] @ self.kin[q]) + share * np.array(
                    [self.similarity(q, int(c), kind) for c in top]
                )
                top = top[np.argsort(-score, kind="stable")]
            ranked = np.concatenate([top, order[depth:]])
            relevance[q] = (view.parent[ranked] == view.parent[q]) | (view.run[ranked] == view.parent_run[q])

        def score(queries: np.ndarray) -> float:
            return round(scored([relevance[q] for q in queries.tolist()], KS, CURVE_K)["mAP"], 4)

        family = view.family[self.children]
        return {"all": score(self.children), **{f: score(self.children[family == f]) for f in sorted(set(family))}}

    def forget(self) -> None:
        """Drop the first layers and pairings computed so far (so that a timing starts from scratch)."""
        self._first.clear()
        self._matched.clear()

    def as_it_stands(self) -> float:
        """The evaluation's own lineage score of the lineage part (a check: ``share`` 0 must give it)."""
        view = self.view
        return round(_lineage(self.rankings, view, self.children, lambda q: view.run != view.run[q], KS, CURVE_K,
                              self.seed)["mAP"], 4)  # fmt: skip


def main() -> None:
    ap = two_zoo_parser(__doc__.split("\n\n")[0], "lineage_rerank.json")
    ap.add_argument("--kinds", nargs="+", default=["mean_cos", "kernel"])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--depths", type=int, nargs="+", default=[20, 50, 100])
    args = ap.parse_args()
    command = (f"python bench/bench_lineage_rerank.py --select {args.select} --measure {args.measure} --kinds "
               f"{' '.join(args.kinds)} --shares {' '.join(map(str, args.shares))} --depths "
               f"{' '.join(map(str, args.depths))} --seed {args.seed}")  # fmt: skip
    select, measure, result = two_zoos(Zoo, args, command)
    for zoo in (select, measure):
        assert zoo.lineage("mean_cos", 0.0, 50)["all"] == zoo.as_it_stands()
    grid = []
    for kind in args.kinds:
        for share in args.shares:
            grid.append({"kind": kind, "share": share, "depth": 50, "lineage": select.lineage(kind, share, 50)["all"]})
            print("select:", grid[-1], flush=True)
    best = max(grid, key=lambda row: row["lineage"])
    for depth in args.depths:
        if depth != 50:
            row = {**best, "depth": depth, "lineage": select.lineage(best["kind"], best["share"], depth)["all"]}
            grid.append(row)
            print("select:", row, flush=True)
    best = max(grid, key=lambda row: row["lineage"])  # the first of equals: depth 50 before the others
    result["grid_on_select"] = grid
    result["chosen"] = {k: best[k] for k in ("kind", "share", "depth")}
    for name, zoo in (("select", select), ("measure", measure)):
        zoo.forget()  # timed from scratch: first layers read and every pair matched
        start = time.perf_counter()
        reranked = zoo.lineage(best["kind"], best["share"], best["depth"])
        seconds = time.perf_counter() - start
        result[name] = {
            "lineage_part_as_it_stands": zoo.lineage(best["kind"], 0.0, best["depth"]),
            "re_ranked": reranked,
            "re_rank_ms_per_query": round(1e3 * seconds / len(zoo.children), 2),
        }
        print(name, json.dumps(result[name]), flush=True)
    result["load_at_end"] = load()
    Path(args.results).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
