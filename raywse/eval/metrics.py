"""Retrieval, clustering and ranking metrics over embeddings (exact, NumPy; cosine similarity)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


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


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of items whose cluster's majority label is their own label."""
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    majority = sum(np.unique(labels[clusters == c], return_counts=True)[1].max() for c in np.unique(clusters))
    return float(majority / len(labels))


def clustering_metrics(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> dict[str, float]:
    """k-means (k = number of distinct labels, on L2-normalised rows) scored by ARI, NMI and purity."""
    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if k < 2 or len(labels) <= k:
        return {"ARI": float("nan"), "NMI": float("nan"), "purity": float("nan")}
    with warnings.catch_warnings():  # duplicate points (e.g. identical embeddings) only warn
        warnings.simplefilter("ignore", ConvergenceWarning)
        clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(normalize(embeddings))
    return {
        "ARI": float(adjusted_rand_score(labels, clusters)),
        "NMI": float(normalized_mutual_info_score(labels, clusters)),
        "purity": purity(labels, clusters),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def kendall_tau(pred: np.ndarray, target: np.ndarray) -> float:
    return float(stats.kendalltau(pred, target).statistic)


def r2_score(pred: np.ndarray, target: np.ndarray) -> float:
    target = np.asarray(target, dtype=np.float64)
    ss_res = float(np.sum((target - pred) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
