"""Hand-computable cases for the retrieval and clustering metrics."""

from __future__ import annotations

import numpy as np
import pytest

from raywse.metrics import (
    clustering_metrics,
    nonzero_columns,
    precision_curve,
    purity,
    ranked_neighbours,
    relevance_metrics,
    retrieval_metrics,
    self_retrieval,
)


def test_relevance_metrics_by_hand():
    # query 1: relevant at ranks 1 and 3 of 4; query 2: relevant at rank 2 only
    rel = [np.array([1, 0, 1, 0], bool), np.array([0, 1, 0, 0], bool)]
    m = relevance_metrics(rel, ks=(1, 2))
    assert m["precision@1"] == pytest.approx((1 + 0) / 2)
    assert m["precision@2"] == pytest.approx((0.5 + 0.5) / 2)
    assert m["recall@2"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert m["MRR"] == pytest.approx((1 + 0.5) / 2)


def test_queries_without_relevant_items_are_skipped():
    m = relevance_metrics([np.array([0, 0], bool), np.array([1, 0], bool)], ks=(1,))
    assert m["precision@1"] == 1.0 and m["MRR"] == 1.0
    assert np.isnan(relevance_metrics([np.array([0, 0], bool)], ks=(1,))["mAP"])


def test_retrieval_metrics_matches_relevance_form():
    labels = np.array([0, 0, 1, 1])
    ranking = [np.array([2, 1]), np.array([0, 3])]
    m = retrieval_metrics(labels[:2], labels, ranking, ks=(1, 2))
    assert m["precision@1"] == pytest.approx(0.5)
    assert m["mAP"] == pytest.approx((0.5 + 1.0) / 2)


def test_ranked_neighbours_excludes_self_and_orders_by_cosine():
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    order = ranked_neighbours(x, x, exclude_self=np.arange(3))
    assert order[0].tolist() == [1, 2] and order[2].tolist() == [1, 0]
    assert self_retrieval(x, np.array([0, 0, 1]), ks=(1,))["precision@1"] == 1.0  # the lone label-1 query is skipped


def test_precision_curve():
    curve = precision_curve([np.array([1, 0, 1], bool), np.array([0, 0, 0], bool)], max_k=3)
    assert curve == pytest.approx([1.0, 0.5, 2 / 3])


def test_purity_by_hand():
    labels = np.array([0, 0, 1, 1, 1, 2])
    clusters = np.array([5, 5, 5, 7, 7, 7])  # majorities: 2 of cluster 5, 2 of cluster 7
    assert purity(labels, clusters) == pytest.approx(4 / 6)
    assert purity(labels, labels) == 1.0


def test_clustering_separable_blobs():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 10
    x = np.concatenate([c + rng.normal(size=(10, 3)) * 0.1 for c in centres])
    m = clustering_metrics(x, np.repeat([0, 1, 2], 10))
    assert m["ARI"] == pytest.approx(1.0) and m["NMI"] == pytest.approx(1.0) and m["purity"] == 1.0


def test_clustering_ignores_empty_columns():
    """Columns that are zero in every row (a block-sparse embedding's unused blocks) change no cluster."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    labels = rng.integers(0, 4, size=60)
    wide = np.zeros((60, 40), dtype=np.float32)
    wide[:, 5:13] = x
    assert clustering_metrics(wide, labels, seed=3) == clustering_metrics(x, labels, seed=3)


def test_nonzero_columns():
    x = np.array([[0.0, 1.0, 0.0], [0.0, -2.0, 3.0]])
    np.testing.assert_array_equal(nonzero_columns(x), x[:, 1:])
    assert nonzero_columns(np.zeros((4, 3))).shape == (4, 1)  # all-zero vectors keep one column


def test_clustering_of_all_zero_embeddings_scores_chance():
    """An embedder that returns zeros (nothing to cluster) is scored, not refused."""
    m = clustering_metrics(np.zeros((12, 5), dtype=np.float32), np.repeat([0, 1, 2], 4))
    assert m["ARI"] == pytest.approx(0.0) and m["purity"] == pytest.approx(1 / 3)
