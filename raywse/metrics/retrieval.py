"""Retrieval metrics over embeddings (exact, NumPy; cosine similarity)."""

from __future__ import annotations

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """A row-wise L2-normalised, C-contiguous float32 copy of ``[n, d]`` vectors (zero rows stay zero).

    Cosine similarity is then an inner product, for NumPy and FAISS alike.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a [n, d] array of vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12))


def nonzero_columns(x: np.ndarray) -> np.ndarray:
    """``[n, d]`` vectors without their columns that are zero in every row (one column kept if all are): nothing a
    distance, a linear model or a tree could use is dropped."""
    keep = np.any(x != 0, axis=0)
    return x[:, keep] if keep.any() else x[:, :1]


def ranked_neighbours(
    queries: np.ndarray, database: np.ndarray, exclude_self: np.ndarray | None = None
) -> list[np.ndarray]:
    """Database indices sorted by cosine similarity to each query (best first), one array per query.

    ``exclude_self[i]`` is the database index of query ``i`` itself (or -1 when it is not in the database); that
    index is removed from query ``i``'s ranking.
    """
    order = np.argsort(-(normalize(queries) @ normalize(database).T), axis=1, kind="stable")
    if exclude_self is None:
        return list(order)
    return [row[row != own] for row, own in zip(order, exclude_self, strict=True)]


def relevance_metrics(relevance: list[np.ndarray], ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """precision@k, recall@k, mAP and MRR from ranked relevance flags, averaged over queries with a relevant item.

    ``relevance[i]`` is a boolean array over query ``i``'s ranked database (best first, self already removed).
    """
    out: dict[str, list[float]] = {f"precision@{k}": [] for k in ks}
    out.update({f"recall@{k}": [] for k in ks})
    out.update({"mAP": [], "MRR": []})
    for relevant in relevance:
        relevant = np.asarray(relevant, dtype=bool)
        n_rel = int(relevant.sum())
        if n_rel == 0:
            continue
        for k in ks:
            hits = relevant[:k].sum()
            out[f"precision@{k}"].append(hits / k)
            out[f"recall@{k}"].append(hits / n_rel)
        ranks = np.flatnonzero(relevant) + 1
        out["mAP"].append(float(np.mean(np.arange(1, n_rel + 1) / ranks)))
        out["MRR"].append(1.0 / ranks[0])
    return {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}


def precision_curve(relevance: list[np.ndarray], max_k: int = 20) -> list[float]:
    """Mean precision@k for k = 1..max_k over queries with at least one relevant item."""
    rows = [np.asarray(r, dtype=bool) for r in relevance if np.any(r)]
    if not rows:
        return [float("nan")] * max_k
    return [float(np.mean([r[:k].sum() / k for r in rows])) for k in range(1, max_k + 1)]


def retrieval_metrics(
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    ranking: list[np.ndarray],
    ks: tuple[int, ...] = (1, 5, 10),
) -> dict[str, float]:
    """precision@k, recall@k, mAP and MRR of label retrieval, averaged over queries with at least one relevant item.

    ``ranking[i]`` lists database indices for query ``i``, best first (self already removed).
    """
    database_labels = np.asarray(database_labels)
    relevance = [database_labels[order] == label for label, order in zip(query_labels, ranking, strict=True)]
    return relevance_metrics(relevance, ks)


def self_retrieval(embeddings: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Leave-one-out retrieval within one set: every item queries all the others."""
    n = len(labels)
    ranking = ranked_neighbours(embeddings, embeddings, exclude_self=np.arange(n))
    return retrieval_metrics(np.asarray(labels), np.asarray(labels), ranking, ks)
