"""The retrieval suite: every task-retrieval and kinship metric of one embedder on the held-out queries.

Each setting ranks a database by cosine similarity to a query and flags the relevant items; see the report for each
setting's definition. Exact score ties are broken in a random order drawn from ``(seed, query)`` (:func:`tie_keys`),
never by manifest order, so an embedder that cannot tell models apart scores what a random ranking scores, and a
recomputation with the same seed gives the same numbers. An embedder with a lineage part answers the lineage setting
as its search does: its first answers re-scored by matching first layers (:mod:`raywse.graph.first_layer_match`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from raywse.eval.config import HELD_OUT, POOLED
from raywse.eval.view import ZooView
from raywse.graph.first_layer_match import RERANK_DEPTH, FirstLayer, rerank
from raywse.metrics import normalize, precision_curve, relevance_metrics

Database = Callable[[int], np.ndarray]  # query index -> boolean mask of the database
Relevant = Callable[[int, np.ndarray], np.ndarray]  # (query index, ranked database indices) -> relevance flags
Rescore = Callable[[int, np.ndarray, np.ndarray], np.ndarray]  # (query, first answers, their cosines) -> new scores


def tie_keys(seed: int, query: int, n: int) -> np.ndarray:
    """Random tie-break keys for the ``n`` models when ``query`` ranks them, reproducible from ``(seed, query)``."""
    return np.random.default_rng([seed, int(query)]).random(n)


def cosines(z: np.ndarray, queries: np.ndarray, query_vectors: np.ndarray | None = None) -> np.ndarray:
    """``[len(queries), len(z)]`` inner products of unit vectors, summed in float64 and rounded to float32, so that
    identical vectors tie exactly whatever order the product kernel sums in. A query's vector is its row of ``z``, or
    of ``query_vectors`` where given."""
    z64 = np.asarray(z, dtype=np.float64)
    q64 = z64 if query_vectors is None else np.asarray(query_vectors, dtype=np.float64)
    return (q64[np.asarray(queries, dtype=np.int64)] @ z64.T).astype(np.float32)


def order_by(scores: np.ndarray, query: int, seed: int) -> np.ndarray:
    """Indices of ``scores`` (one per model) best first; exact ties in a random order drawn from ``(seed, query)``."""
    by_key = np.argsort(tie_keys(seed, query, len(scores)))
    return by_key[np.argsort(-scores[by_key], kind="stable")]


def rank(z: np.ndarray, query: int, candidates: np.ndarray, seed: int) -> np.ndarray:
    """``candidates`` (indices into ``z``, unit vectors) best first by cosine to ``query``; exact ties in a random
    order drawn from ``(seed, query)``."""
    order = Rankings(z, seed).order(query)
    keep = np.zeros(len(z), dtype=bool)
    keep[np.asarray(candidates, dtype=np.int64)] = True
    return order[keep[order]]


class Rankings:
    """Every model ranked by cosine to a query (:func:`order_by`), computed once per query and kept, so that the many
    databases one query is scored against (each a subset of the models) cost a mask each rather than a sort.

    Args:
        z: ``[n, d]`` unit vectors (the database).
        seed: draws the tie-break order.
        queries: ``[n, d]``: each model's query vector where it differs from its row of ``z`` (lineage queries).
    """

    BLOCK = 512  # query rows per similarity product

    def __init__(self, z: np.ndarray, seed: int = 0, queries: np.ndarray | None = None):
        self.z64, self.seed = np.asarray(z, dtype=np.float64), seed  # converted once, not per block of queries
        self.q64 = None if queries is None else np.asarray(queries, dtype=np.float64)
        self._orders: dict[int, np.ndarray] = {}

    def prepare(self, queries: np.ndarray) -> None:
        """Rank every model for each of ``queries`` not ranked yet, a block of similarity rows at a time."""
        todo = np.array(sorted({int(q) for q in queries} - self._orders.keys()), dtype=np.int64)
        for start in range(0, len(todo), self.BLOCK):
            block = todo[start : start + self.BLOCK]
            for q, scores in zip(block, cosines(self.z64, block, self.q64), strict=True):
                self._orders[int(q)] = order_by(scores, int(q), self.seed).astype(np.int32)

    def cosines(self, query: int, idx: np.ndarray) -> np.ndarray:
        """``query``'s cosines to the models ``idx``, as the ranking computed them."""
        q64 = self.z64 if self.q64 is None else self.q64
        return (q64[int(query)] @ self.z64[np.asarray(idx, dtype=np.int64)].T).astype(np.float32)

    def order(self, query: int) -> np.ndarray:
        """Every model's index, best first for ``query`` (the query itself included)."""
        if int(query) not in self._orders:
            self.prepare(np.array([query]))
        return self._orders[int(query)]


def ranked_relevance(
    z: np.ndarray | Rankings,
    queries: np.ndarray,
    database: Database,
    relevant: Relevant,
    seed: int = 0,
    rescore: Rescore | None = None,
) -> list[np.ndarray]:
    """Ranked relevance flags per query: ``database(q)`` is a boolean mask, ``relevant(q, idx)`` flags indices.

    ``z`` holds unit vectors (or is their :class:`Rankings`, shared between calls); the query itself never enters its
    database; ties are broken as :func:`rank` breaks them. ``rescore`` re-orders each query's first
    :data:`~raywse.graph.first_layer_match.RERANK_DEPTH` answers by the scores it gives them.
    """
    rankings = z if isinstance(z, Rankings) else Rankings(z, seed)
    rankings.prepare(queries)
    out = []
    for q in queries:
        order = rankings.order(q)
        keep = np.asarray(database(q), dtype=bool).copy()
        keep[q] = False
        order = order[keep[order]]
        if rescore is not None:
            top = order[:RERANK_DEPTH]
            scores = rescore(int(q), top, rankings.cosines(q, top))
            order = np.concatenate([top[np.argsort(-scores, kind="stable")], order[RERANK_DEPTH:]])
        out.append(relevant(q, order))
    return out


def first_layer_rescore(layers: Sequence[FirstLayer | None]) -> Rescore:
    """Re-scores answers as a lineage search does (:func:`~raywse.graph.first_layer_match.rerank`), ``layers`` being
    every model's first layer by index."""
    return lambda q, top, cosines: rerank(layers[q], [layers[i] for i in top], cosines)


def scored(relevance: list[np.ndarray], ks: tuple[int, ...], curve_k: int) -> dict:
    """Relevance metrics, the number of scored queries, the precision ceiling at the largest k and the curve."""
    out = relevance_metrics(relevance, ks)
    hits = [np.asarray(r, dtype=bool) for r in relevance if np.any(r)]
    out["queries"] = len(hits)
    k = ks[-1]
    out[f"precision@{k}_ceiling"] = float(np.mean([min(k, r.sum()) / k for r in hits])) if hits else float("nan")
    out["precision_curve"] = precision_curve(relevance, curve_k)
    return out


def retrieval_suite(
    emb: np.ndarray,
    view: ZooView,
    ks: tuple[int, ...] = (1, 5, 10),
    curve_k: int = 20,
    seed: int = 0,
    kinship: tuple[np.ndarray, np.ndarray] | None = None,
    first_layers: Sequence[FirstLayer | None] | None = None,
) -> dict:
    """Every retrieval metric of one embedder: split → metric (see the report for each setting's definition);
    ``seed`` draws the tie-break order. ``kinship``: ``(lineage queries, database)`` of an embedder that answers
    lineage queries with other vectors (:meth:`~raywse.models.encoder.NeuralGraphEncoder.kinship_form` against the
    database form, compared as the index compares them); the ``lineage`` setting then ranks with those, and with
    ``first_layers`` (every model's, by index) re-scores its first answers as a lineage search does.

    Task settings query with held-out models that learned their task (pooled settings: every held-out split but
    ``test_lineage``, and no fine-tuned child); a model that did not learn is never relevant. A query's own run and
    its lineage (parent, child and sibling runs, :meth:`ZooView.unrelated`) never enter its task databases."""
    z = Rankings(normalize(emb), seed)  # every setting below ranks with these (one sort per query)
    held_all = np.flatnonzero(view.held_out)
    learned = held_all[view.learned[held_all]]
    held = learned[np.isin(view.split[learned], POOLED) & (view.parent[learned] == "")]  # children: on their own

    def same_task(q: int, idx: np.ndarray) -> np.ndarray:
        return (view.task[idx] == view.task[q]) & view.learned[idx]

    def score(queries: np.ndarray, database: Database, relevant: Relevant = same_task) -> dict:
        return scored(ranked_relevance(z, queries, database, relevant, seed), ks, curve_k)

    out: dict[str, dict] = {split: score(learned[view.split[learned] == split], view.unrelated) for split in HELD_OUT}
    out["held_out"] = score(held, view.unrelated)
    out["cross_arch"] = score(held, lambda q: (view.arch != view.arch[q]) & view.unrelated(q))  # own architecture out
    out["same_family"] = score(held, lambda q: (view.family == view.family[q]) & view.unrelated(q))
    out.update(_cross_family(z, view, held, same_task, ks, curve_k, seed))
    out["label_map"] = score(held[view.group[held] != ""], lambda q: (view.group == view.group[q]) & view.unrelated(q))
    kin = z if kinship is None else Rankings(kinship[1], seed, queries=kinship[0])
    other_runs: Database = lambda q: view.run != view.run[q]  # noqa: E731
    if first_layers is not None:  # the same queries without the re-scoring, for the record
        out["lineage_embedding_only"] = _lineage(kin, view, held_all, other_runs, ks, curve_k, seed)
    rescore = None if first_layers is None else first_layer_rescore(first_layers)
    out["lineage"] = _lineage(kin, view, held_all, other_runs, ks, curve_k, seed, rescore)
    return out


def _cross_family(
    z: Rankings, view: ZooView, held: np.ndarray, same_task: Relevant, ks: tuple[int, ...], curve_k: int, seed: int
) -> dict[str, dict]:
    """Held-out queries of each family against the other families; per direction too when there are exactly two."""
    families = set(view.family)
    out: dict[str, dict] = {}
    cross = {}
    for src in sorted(families):
        queries = held[view.family[held] == src]
        cross[src] = ranked_relevance(z, queries, lambda q: view.family != view.family[q], same_task, seed)
        if len(families) == 2:
            dst = next(f for f in families if f != src)
            out[f"cross_family_{src}_to_{dst}"] = scored(cross[src], ks, curve_k)
    out["cross_family"] = scored([r for rel in cross.values() for r in rel], ks, curve_k)
    return out


def _lineage(
    z: Rankings,
    view: ZooView,
    held: np.ndarray,
    database: Database,
    ks: tuple[int, ...],
    curve_k: int,
    seed: int,
    rescore: Rescore | None = None,
) -> dict:
    """Held-out children whose parent was evaluated, as queries; relevant = the parent's run (every snapshot of it)
    and the parent's other children."""
    known = set(view.ids)
    children = np.array([q for q in held if view.parent[q] in known], dtype=np.int64)

    def is_kin(q: int, idx: np.ndarray) -> np.ndarray:
        return (view.parent[idx] == view.parent[q]) | (view.run[idx] == view.parent_run[q])

    return scored(ranked_relevance(z, children, database, is_kin, seed, rescore), ks, curve_k)
