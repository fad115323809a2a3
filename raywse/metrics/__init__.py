"""raywse.metrics: a leaf package of evaluation metrics (NumPy / SciPy / scikit-learn only; no raywse imports).

``retrieval`` (cosine ranking, precision / recall / mAP / MRR), ``clustering`` (k-means ARI / NMI / purity),
``correlation`` (Kendall τ, Spearman ρ, R²). Train, tune and eval all score embeddings with these.
"""

from raywse.metrics.clustering import cluster_scores, clustering_metrics, purity
from raywse.metrics.correlation import kendall_tau, r2_score, spearman
from raywse.metrics.retrieval import (
    nonzero_columns,
    normalize,
    precision_curve,
    ranked_neighbours,
    relevance_metrics,
    retrieval_metrics,
    self_retrieval,
)

__all__ = [
    "cluster_scores",
    "clustering_metrics",
    "kendall_tau",
    "nonzero_columns",
    "normalize",
    "precision_curve",
    "purity",
    "r2_score",
    "ranked_neighbours",
    "relevance_metrics",
    "retrieval_metrics",
    "self_retrieval",
    "spearman",
]
