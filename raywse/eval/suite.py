"""The retrieval suite: every task-retrieval and kinship metric of one embedder on the held-out queries.

Each setting ranks a database by cosine similarity to a query and flags the relevant items; see the report for each
setting's definition. Exact score ties are broken in a random order drawn from ``(seed, query)`` (:func:`tie_keys`),
never by manifest order, so an embedder that cannot tell models apart scores what a random ranking scores, and a
recomputation with the same seed gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from raywse.eval.config import HELD_OUT, POOLED
from raywse.eval.view import ZooView
from raywse.metrics import normalize, precision_curve, relevance_metrics

Database = Callable[[int], np.ndarray]  # query index -> boolean mask of the database
Relevant = Callable[[int, np.ndarray], np.ndarray]  # (query index, ranked database indices) -> relevance flags


def tie_keys(seed: int, query: int, n: int) -> np.ndarray:
    """Random tie-break keys for the ``n`` models when ``query`` ranks them, reproducible from ``(seed, query)``."""
    return np.random.default_rng([seed, int(query)]).random(n)


def rank(z: np.ndarray, query: int, candidates: np.ndarray, seed: int) -> np.ndarray:
    """``candidates`` (indices into ``z``, unit vectors) best first by cosine to ``query``; exact ties in a random
    order drawn from ``(seed, query)``."""
    keys = tie_keys(seed, query, len(z))[candidates]
    return candidates[np.lexsort((keys, -(z[candidates] @ z[query])))]


def ranked_relevance(
    z: np.ndarray, queries: np.ndarray, database: Database, relevant: Relevant, seed: int = 0
) -> list[np.ndarray]:
    """Ranked relevance flags per query: ``database(q)`` is a boolean mask, ``relevant(q, idx)`` flags indices.

    ``z`` holds unit vectors; the query itself never enters its database; ties are broken by :func:`rank`.
    """
    out = []
    for q in queries:
        db = np.flatnonzero(database(q))
        out.append(relevant(q, rank(z, int(q), db[db != q], seed)))
    return out


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
    emb: np.ndarray, view: ZooView, ks: tuple[int, ...] = (1, 5, 10), curve_k: int = 20, seed: int = 0
) -> dict:
    """Every retrieval metric of one embedder: split → metric (see the report for each setting's definition);
    ``seed`` draws the tie-break order.

    Task settings query with held-out models that learned their task (pooled settings: every held-out split but
    ``test_lineage``, and no fine-tuned child); a model that did not learn is never relevant. A query's own run and
    its lineage (parent, child and sibling runs, :meth:`ZooView.unrelated`) never enter its task databases."""
    z = normalize(emb)
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
    out["lineage"] = _lineage(z, view, held_all, lambda q: view.run != view.run[q], ks, curve_k, seed)
    return out


def _cross_family(
    z: np.ndarray, view: ZooView, held: np.ndarray, same_task: Relevant, ks: tuple[int, ...], curve_k: int, seed: int
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
    z: np.ndarray, view: ZooView, held: np.ndarray, database: Database, ks: tuple[int, ...], curve_k: int, seed: int
) -> dict:
    """Held-out children whose parent was evaluated, as queries; relevant = the parent's run (every snapshot of it)
    and the parent's other children."""
    known = set(view.ids)
    children = np.array([q for q in held if view.parent[q] in known], dtype=np.int64)

    def is_kin(q: int, idx: np.ndarray) -> np.ndarray:
        return (view.parent[idx] == view.parent[q]) | (view.run[idx] == view.parent_run[q])

    return scored(ranked_relevance(z, children, database, is_kin, seed), ks, curve_k)
