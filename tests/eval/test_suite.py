"""Fast checks of the retrieval suite, the probes and the report rendering on small synthetic embeddings."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict

import numpy as np
import pytest

from raywse.eval.config import HARD, HELD_OUT, RAYWSE, EvalConfig
from raywse.eval.probes import (
    accuracy_metrics,
    held_masks,
    recorded_accuracy_reference,
    structure_metrics,
    within_group_tau,
)
from raywse.eval.render import _comparison_lines, _fmt, render_report
from raywse.eval.report import json_safe
from raywse.eval.suite import Rankings, rank, ranked_relevance, retrieval_suite, scored, tie_keys
from raywse.eval.summary import (
    GOALS,
    NOT_MEASURED,
    SUMMARY_METRICS,
    summarize,
    summary_console_table,
    summary_section,
)
from raywse.eval.view import ZooView
from raywse.metrics import kendall_tau, normalize, relevance_metrics

# model: task, family, split, parent
MODELS = [
    ("t0", "mlp", "train", ""),
    ("t0", "cnn", "train", ""),
    ("t1", "mlp", "train", ""),
    ("t1", "cnn", "train", ""),
    ("t2", "mlp", "train", ""),
    ("t2", "cnn", "train", ""),
    ("t0", "mlp", "test_seed", ""),
    ("t1", "cnn", "test_hparam", ""),
    ("t2", "cnn", "test_family", ""),
    ("t0", "cnn", "test_lineage", "m1"),
    ("t1", "mlp", "test_seed", ""),
    ("t2", "mlp", "test_lineage", "m4"),
]
TASKS, FAMILIES = ["t0", "t1", "t2"], ["mlp", "cnn"]


@pytest.fixture
def view() -> ZooView:
    rng = np.random.default_rng(0)
    return ZooView(
        ids=[f"m{i}" for i in range(len(MODELS))],
        task=np.array([m[0] for m in MODELS]),
        family=np.array([m[1] for m in MODELS]),
        split=np.array([m[2] for m in MODELS]),
        parent=np.array([m[3] for m in MODELS]),
        test_acc=rng.uniform(0.5, 1.0, len(MODELS)),
        group=np.array(["g" if m[0] in ("t0", "t1") else "" for m in MODELS]),
        arch=np.array([f"{m[1]}-{i % 2}" for i, m in enumerate(MODELS)]),
        run=np.array([f"r{i}" for i in range(len(MODELS))]),
        parent_run=np.array([f"r{m[3][1:]}" if m[3] else "" for m in MODELS]),
        learned=np.ones(len(MODELS), dtype=bool),
    )


def task_embeddings(view: ZooView) -> np.ndarray:
    """One axis per task plus a small one per family: every same-task model is closer than any other."""
    emb = np.zeros((len(view.ids), len(TASKS) + len(FAMILIES)), np.float32)
    for i, (task, family) in enumerate(zip(view.task, view.family, strict=True)):
        emb[i, TASKS.index(task)] = 1.0
        emb[i, len(TASKS) + FAMILIES.index(family)] = 0.1
    return emb


def test_ranked_relevance_excludes_the_query_and_ranks_by_cosine():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    everything = np.ones(4, dtype=bool)
    ranked = ranked_relevance(z, np.array([0, 1]), lambda q: everything, lambda q, idx: idx)
    assert ranked[0].tolist() == [2, 3, 1]
    assert ranked[1].tolist() == [3, 2, 0]
    only_odd = ranked_relevance(z, np.array([0]), lambda q: np.arange(4) % 2 == 1, lambda q, idx: idx)
    assert only_odd[0].tolist() == [3, 1]


def test_shared_rankings_match_sorting_each_database_alone():
    """One sort per query (:class:`Rankings`, reused across databases) ranks every database as sorting it alone by
    (cosine, the query's tie-break key) would, ties included."""
    rng = np.random.default_rng(3)
    z = normalize(rng.integers(-1, 2, size=(60, 3)).astype(np.float32))  # few distinct vectors: many exact ties
    rankings = Rankings(z, seed=5)
    for q in range(0, 60, 7):
        database = rng.random(60) < 0.5
        got = ranked_relevance(rankings, np.array([q]), lambda _, mask=database: mask, lambda _, idx: idx)[0]
        candidates = np.flatnonzero(database & (np.arange(60) != q))
        keys = tie_keys(5, q, 60)[candidates]
        expected = candidates[np.lexsort((keys, -np.round(z[candidates] @ z[q], 6)))]
        assert got.tolist() == expected.tolist()
        assert rank(z, q, candidates, seed=5).tolist() == expected.tolist()


def test_ties_are_broken_at_random_reproducibly():
    """Equal scores are ranked in a seeded random order (not index order); a strictly better score still wins."""
    n = 40
    z = np.tile([1.0, 0.0], (n, 1))
    z[7] = [0.6, 0.8]  # strictly less similar to every other model
    everything = np.ones(n, dtype=bool)
    queries = np.array([0, 1, 2])

    def run(seed: int) -> list[list[int]]:
        return [r.tolist() for r in ranked_relevance(z, queries, lambda q: everything, lambda q, idx: idx, seed)]

    ranked = run(seed=0)
    for q, order in zip(queries, ranked, strict=True):
        assert sorted(order) == [i for i in range(n) if i != q]
        assert order[-1] == 7
        assert order[:-1] != sorted(order[:-1]), "ties kept index order"
    assert ranked[1][:10] != ranked[2][:10]  # each query draws its own order
    assert run(seed=0) == ranked  # reproducible
    assert run(seed=1) != ranked
    pool = np.arange(10, 30)
    picks = {int(rank(z, q, pool, seed=0)[0]) for q in range(10)}
    assert len(picks) > 1 and picks != {10}  # the fine-tuning pick is not always the first tied candidate
    assert rank(z, 3, pool, seed=0).tolist() == rank(z, 3, pool, seed=0).tolist()


def test_tied_embeddings_score_like_a_random_ranking():
    """Identical embeddings must not inherit the manifest order: relevant models listed first earn nothing."""
    n, n_rel = 200, 20
    task = np.array(["a"] * (n_rel + 1) + ["b"] * (n - n_rel - 1))  # query 0 and its 20 same-task models come first
    z = np.ones((n, 4)) / 2.0
    ranked = ranked_relevance(z, np.array([0]), lambda q: np.ones(n, bool), lambda q, idx: task[idx] == task[q])
    p10 = relevance_metrics(ranked, (10,))["precision@10"]
    assert p10 < 0.5  # index order would give 1.0; chance is 20 / 199


def test_scored_counts_queries_with_a_relevant_item_and_the_ceiling():
    relevance = [np.array([False, True, False]), np.array([False, False, False]), np.array([True, True, False])]
    out = scored(relevance, (1, 2), curve_k=3)
    assert out["queries"] == 2
    assert out["precision@1"] == pytest.approx(0.5)
    assert out["precision@2_ceiling"] == pytest.approx(0.75)  # one query has a single relevant item
    assert out["precision_curve"] == pytest.approx([0.5, 0.75, 0.5])
    assert math.isnan(scored([np.zeros(3, bool)], (1,), 2)["precision@1_ceiling"])


def test_retrieval_suite_on_task_separated_embeddings(view):
    out = retrieval_suite(task_embeddings(view), view, ks=(1, 5, 10), curve_k=5)
    assert list(out) == [
        *HELD_OUT,
        "held_out",
        "cross_arch",
        "same_family",
        "cross_family_cnn_to_mlp",
        "cross_family_mlp_to_cnn",
        "cross_family",
        "label_map",
        "lineage",
    ]
    assert out["test_task"]["queries"] == 0  # no model of an unseen task here
    for split in (*HELD_OUT[:-1], "held_out", "cross_arch", "same_family", "cross_family", "label_map"):
        assert out[split]["precision@1"] == 1.0, split
        assert out[split]["MRR"] == 1.0, split
    assert out["held_out"]["queries"] == 4  # lineage children are scored on their own, not pooled
    assert out["test_lineage"]["queries"] == 2
    assert out["held_out"]["precision@10_ceiling"] == pytest.approx(0.3)  # 3 other models per task
    assert out["held_out"]["precision@10"] == pytest.approx(0.3)
    # cross_arch drops the query's architecture: 2 same-task models left for the three queries of a shared
    # architecture (mlp-0, cnn-1), 3 for the one query alone in its own (cnn-0)
    assert out["cross_arch"]["queries"] == 4
    assert out["cross_arch"]["precision@10_ceiling"] == pytest.approx((3 * 2 + 3) / 40)
    assert out["label_map"]["queries"] == 3  # pooled held-out models of t0 and t1, the group "g"
    assert out["label_map"]["recall@5"] == 1.0
    assert out["cross_family_mlp_to_cnn"]["queries"] == 2
    assert out["cross_family"]["recall@1"] == pytest.approx(0.5)  # two models of the task in the other family
    assert out["lineage"]["queries"] == 2
    assert out["lineage"]["precision@1"] == 1.0  # each child's parent is its closest model


def test_lineage_ranks_the_kinship_queries_against_the_database_and_nothing_else_does(view):
    """An embedder with lineage queries of its own (the GNN embedders' first-layer sketch against their database
    form): the lineage setting ranks with those — here they find each child's parent, which the task embeddings,
    scrambled for the children, do not — and every task setting is scored as without them."""
    emb = task_embeddings(view)
    emb[[9, 11]] = emb[[11, 9]]  # each child now looks like a model of another task
    kin = np.eye(len(view.ids), dtype=np.float32)
    kin[9], kin[11] = kin[1], kin[4]  # ... but shares its parent's sketch
    database = kin * 2.0  # stored at another scale, as the database form stores the sketch
    plain = retrieval_suite(emb, view, ks=(1, 5, 10), curve_k=5)
    with_kin = retrieval_suite(emb, view, ks=(1, 5, 10), curve_k=5, kinship=(kin, database))
    assert plain["lineage"]["precision@1"] < 1.0
    assert with_kin["lineage"]["precision@1"] == 1.0 and with_kin["lineage"]["queries"] == 2
    assert repr({k: v for k, v in with_kin.items() if k != "lineage"}) == repr(
        {k: v for k, v in plain.items() if k != "lineage"}
    )  # repr: equal NaNs (no test_task queries) compare equal


def test_unlearned_models_are_never_relevant_and_own_runs_never_retrieved(view):
    """A model that did not learn its task neither queries nor counts as relevant; a query's own run (its other
    snapshots) never enters its database."""
    emb = task_embeddings(view)
    base = retrieval_suite(emb, view, ks=(1, 5, 10), curve_k=5)
    view.learned[2] = False  # m2: a t1 train model
    view.learned[6] = False  # m6: a t0 test_seed query
    out = retrieval_suite(emb, view, ks=(1, 5, 10), curve_k=5)
    assert out["test_seed"]["queries"] == base["test_seed"]["queries"] - 1
    assert out["held_out"]["precision@10_ceiling"] < base["held_out"]["precision@10_ceiling"]
    view.learned[:] = True
    z = task_embeddings(view) + np.random.default_rng(0).normal(0, 1e-3, (len(view.ids), 5)).astype(np.float32)
    z[2] = z[6]  # m2 (t1) as an exact copy of the query m6 (t0): its top hit, unless the two share a run
    assert retrieval_suite(z, view, ks=(1, 5, 10), curve_k=5)["test_seed"]["precision@1"] == 0.5
    view.run[2] = view.run[6]
    assert retrieval_suite(z, view, ks=(1, 5, 10), curve_k=5)["test_seed"]["precision@1"] == 1.0


def test_retrieval_suite_on_family_embeddings_fails_cross_family(view):
    """Embeddings that only know the family: the same-task model of the other family is never ranked first."""
    emb = np.zeros((len(view.ids), 2), np.float32)
    emb[np.arange(len(view.ids)), (view.family == "cnn").astype(int)] = 1.0
    emb += np.arange(len(view.ids))[:, None] * 1e-3  # break ties away from any task structure
    out = retrieval_suite(emb, view, ks=(1, 5, 10), curve_k=5)
    assert out["cross_family"]["MRR"] < 1.0
    assert out["held_out"]["precision@1"] < 1.0


def test_cross_arch_removes_the_architecture_shortcut(view):
    """When architecture gives the task away, an architecture one-hot wins task retrieval but, with the query's
    architecture out of the database, ranks every model at cosine 0 (a random order)."""
    view.arch = np.char.add(view.task, view.family)  # one architecture per (task, family), as in the demo zoo
    names = sorted(set(view.arch))
    emb = np.eye(len(names), dtype=np.float32)[[names.index(a) for a in view.arch]]
    out = retrieval_suite(emb, view, ks=(1, 5, 10), curve_k=5)
    assert out["held_out"]["precision@1"] == 1.0  # every held-out query has a same-architecture train model
    assert out["cross_arch"]["queries"] == 4
    assert out["cross_arch"]["precision@1"] < 1.0
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for q in np.flatnonzero(view.held_out):
        database = ranked_relevance(z, [q], lambda q: view.arch != view.arch[q], lambda q, idx: idx)[0]
        assert len(database) == int((view.arch != view.arch[q]).sum())
        assert not np.any(view.arch[database] == view.arch[q])
    assert summarize({"arch_oracle": out})["arch_oracle"]["task_p10_cross_arch"] == out["cross_arch"]["precision@10"]


def test_within_group_tau():
    groups = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 2 + ["d"] * 3 + ["e"] * 3)
    actual = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.5, 0.1, 0.5, 0.5, 0.5, 0.2, 0.3, 0.4])
    pred = np.array([0.9, 0.95, 0.97, 0.99, 0.1, 0.2, 0.3, 0.4, 0.0, 1.0, 0.1, 0.2, 0.3, 0.5, 0.5, 0.5])
    tau, n_groups = within_group_tau(pred, actual, groups)
    # a and b ranked perfectly inside (τ 1) though not across groups; c too small; d has equal accuracies (skipped);
    # e's constant predictions rank nothing (0)
    assert n_groups == 3
    assert tau == pytest.approx(2 / 3)
    assert kendall_tau(pred, actual) < 0.5
    assert math.isnan(within_group_tau(pred[:2], actual[:2], groups[:2])[0])


def test_summary_rows():
    scores = {
        "cross_arch": {"precision@10": 0.4},
        "cross_family": {"precision@10": 0.3},
        "label_map": {"precision@1": 0.9},
        "lineage": {"mAP": 0.7},
        "held_out": {"acc_kendall_tau": 0.5, "acc_kendall_tau_within": 0.2},
    }
    row = summarize({RAYWSE: scores})[RAYWSE]
    assert tuple(row) == SUMMARY_METRICS
    assert row == {
        "task_p10_cross_arch": 0.4,
        "cross_family_p10": 0.3,
        "label_map_p1": 0.9,
        "lineage_map": 0.7,
        "acc_tau_pooled": 0.5,
        "acc_tau_within": 0.2,
        "foreign_p10": None,
        "foreign_to_zoo_p10": None,
    }
    assert set(NOT_MEASURED) == {"foreign_p10", "foreign_to_zoo_p10"} and set(GOALS) == set(SUMMARY_METRICS)
    assert summarize({RAYWSE: {}})[RAYWSE]["lineage_map"] is None  # no queries: None, never a number


def test_config_needs_the_summary_ks():
    assert EvalConfig().ks == (1, 5, 10)
    with pytest.raises(ValueError, match="ks must include 1 and 10"):
        EvalConfig(ks=(1, 5))
    with pytest.raises(ValueError, match="unknown remote_fits"):
        EvalConfig(remote_fits=("raywse",))
    with pytest.raises(ValueError, match="finetune_embedders cannot be remote_fits"):
        EvalConfig(remote_fits=("input_saliency",))
    with pytest.raises(ValueError, match="remote_fit_cpus must be at least 1, got 0"):
        EvalConfig(remote_fit_cpus=0)


def test_probes(view):
    emb = np.c_[view.test_acc, np.ones(len(view.ids))].astype(np.float32)  # accuracy is linear in the embedding
    acc = accuracy_metrics(emb, view)
    assert set(acc) == {s for s, m in held_masks(view) if m.sum() >= 2} == {"test_seed", "test_lineage", "held_out"}
    assert acc["held_out"]["ridge_R2"] > 0.9
    assert acc["held_out"]["ridge_kendall_tau"] == pytest.approx(1.0)
    assert acc["held_out"]["acc_regressor"] in ("ridge", "gbr") and "gbr_kendall_tau" in acc["held_out"]
    structure = structure_metrics(task_embeddings(view), view, seed=0)
    assert structure["held_out"]["kmeans_ARI"] == pytest.approx(1.0)
    assert structure["held_out"]["kmeans_purity"] == pytest.approx(1.0)
    padded = np.zeros((len(emb), 7), dtype=np.float32)  # columns zero in every row (unused blocks) change nothing
    padded[:, [2, 5]] = emb
    assert accuracy_metrics(padded, view)["held_out"]["acc_kendall_tau"] == acc["held_out"]["acc_kendall_tau"]
    blank = accuracy_metrics(np.zeros_like(emb), view)["held_out"]  # nothing to read: scored, not refused
    assert blank["ridge_kendall_tau"] == 0.0 or math.isnan(blank["ridge_kendall_tau"])


def test_recorded_train_accuracy_is_scored_as_the_summary_scores_accuracy(view):
    """The reference beside the accuracy goals: the recorded train accuracy as the prediction, held-out models only."""
    assert recorded_accuracy_reference(view) == {}  # nothing recorded
    view.train_acc = view.test_acc.copy()
    within = recorded_accuracy_reference(view)["acc_tau_within"]
    assert math.isnan(within)  # the fixture's held-out (task, family) groups are all smaller than 3
    metrics = json_safe({"summary": {}, "summary_goals": GOALS, "summary_not_measured": {},
                         "accuracy_reference": recorded_accuracy_reference(view)})  # fmt: skip
    assert "acc_tau_pooled 1.000 / acc_tau_within n/a" in "\n".join(summary_section(metrics))
    view.task, view.family = np.full(len(view.ids), "t0"), np.full(len(view.ids), "mlp")  # one group to rank within
    assert view.held_out.sum() >= 3
    # right on the held-out models, backwards on the rest (and unknown on some of those): only held-out ones count
    view.train_acc = np.where(view.held_out, view.test_acc, 1.0 - view.test_acc)
    view.train_acc[np.flatnonzero(~view.held_out)[:2]] = np.nan
    assert recorded_accuracy_reference(view) == pytest.approx({"acc_tau_pooled": 1.0, "acc_tau_within": 1.0})
    view.train_acc = 1.0 - view.test_acc  # ranks every held-out model backwards
    assert recorded_accuracy_reference(view) == pytest.approx({"acc_tau_pooled": -1.0, "acc_tau_within": -1.0})
    view.train_acc = np.where(view.held_out, np.nan, 0.5)
    assert recorded_accuracy_reference(view) == {}


def test_console_table_rows_goals_and_the_accuracy_reference():
    row = dict.fromkeys(SUMMARY_METRICS, 0.5)
    metrics = {"summary": {"rival": row, RAYWSE: row | {"lineage_map": None}}, "summary_goals": GOALS}
    lines = summary_console_table(metrics)
    assert [line.split()[0] for line in lines[1:]] == [RAYWSE, "rival", "goal"]  # raywse first
    assert lines[1].split()[1:] == ["0.500", "0.500", "0.500", "n/a", "0.500", "0.500", "0.500", "0.500"]
    metrics["accuracy_reference"] = {"acc_tau_pooled": 0.849, "acc_tau_within": 0.65}
    assert summary_console_table(metrics)[-1].endswith("acc_τ 0.849, acc_τ_in 0.650")


def test_render_helpers():
    assert _fmt(None) == "n/a"
    assert _fmt(0.12345) == "0.123"
    scores = {RAYWSE: {"a": {"m": 0.5}, "b": {"m": 0.1}}, "rival": {"a": {"m": 0.4}, "b": {"m": 0.2}}}
    lines = _comparison_lines(scores, "rival", [("a", "m", "A"), ("b", "m", "B"), ("c", "m", "C")])
    assert lines == [
        "- A: raywse 0.500 beats rival 0.400.",
        "- B: **raywse does NOT beat rival** (0.100 vs 0.200).",
        "- C: not measurable on this zoo (no queries).",
    ]
    clean = json_safe({"x": (np.float32(0.5), float("nan"), np.int64(3)), 1: float("inf")})
    assert clean == {"x": [0.5, None, 3], "1": None}
    assert type(clean["x"][2]) is int


def test_render_report_sections_in_order(view):
    config = EvalConfig(baselines=("input_saliency",))
    ours = retrieval_suite(task_embeddings(view), view, config.ks, config.curve_k)
    rival = copy.deepcopy(ours)
    rival["label_map"]["precision@1"] = 0.25
    rival["cross_arch"]["precision@10"] = 0.5
    scores = {RAYWSE: ours, "input_saliency": rival}
    summary = {"runs": 5, "mean_steps": 10.0, "ci95": 2.0, "censored": 0, "reached": 1.0, "mean_start_acc": 0.4,
               "mean_final_acc": 0.9}  # fmt: skip
    run = {"task": "t1", "family": "mlp"}
    metrics = json_safe(
        {
            "summary": summarize(scores),
            "summary_goals": GOALS,
            "summary_not_measured": NOT_MEASURED,
            "accuracy_reference": {"acc_tau_pooled": 0.849, "acc_tau_within": 0.65},
            "embedders": scores,
            "finetune": {
                "t0": {
                    "target_acc": 0.8,
                    "arms": {"retrieved:raywse": [run], "scratch": [run]},
                    "summary": {"retrieved:raywse": summary, "scratch": summary | {"mean_steps": 30.0}},
                },
                "t2": {"skipped": "no compatible model of another task"},
            },
            "finetune_overall": {"retrieved:raywse": summary, "scratch": summary | {"mean_steps": 30.0, "censored": 2}},
            "counts": {"models": 12, "manifest_models": 12, "tasks": 3, "splits": {}, "families": {}},
            "encoder_version": "v123",
            "seconds": {RAYWSE: 1.25},
            "config": asdict(config),
        }
    )
    report = render_report(metrics)
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Summary",
        "## Embedders",
        "## Hard splits",
        "## raywse against the training-free input-saliency baseline",
        "## Task retrieval per held-out split",
        "## Accuracy prediction",
        "## Embedding structure",
        "## Fine-tuning steps saved",
        "## Caveats",
        "## Figures",
    ]
    assert "Encoder version `v123`" in report
    tables = [line for line in report.splitlines() if line.startswith("| ")]
    assert tables[0] == f"| embedder | {' | '.join(SUMMARY_METRICS)} |"  # the first table is the summary
    p10 = ours["cross_arch"]["precision@10"]
    assert tables[1].startswith(f"| **{RAYWSE}** | {p10:.3f} | 0.200 | 1.000 | 1.000 | n/a | n/a |")
    assert tables[1].endswith("| not measured | not measured |")
    assert tables[3] == "| goal | ≥ 0.95 | ≥ 0.90 | ≥ 0.95 | ≥ 0.95 | ≥ 0.90 | ≥ 0.75 | ≥ 0.95 | ≥ 0.90 |"
    assert "- raywse meets 2 of 4 measured goals: label_map_p1 1.000 ≥ 0.95; lineage_map 1.000 ≥ 0.95." in report
    assert f"- raywse misses 2 of 4: task_p10_cross_arch {p10:.3f} < 0.95; cross_family_p10 0.200 < 0.90." in report
    assert ": acc_tau_pooled, acc_tau_within." in report
    assert "- `foreign_p10`: not measured: no foreign zoo given (EvalConfig.foreign_dir)." in report
    assert "- `foreign_to_zoo_p10`: not measured: no foreign zoo given (EvalConfig.foreign_dir)." in report
    assert f"- Rows above raywse: task_p10_cross_arch (raywse {p10:.3f}): input_saliency 0.500." in report
    assert "test accuracy at acc_tau_pooled 0.849 / acc_tau_within 0.650." in report
    assert f"| {RAYWSE} | permutation-equivariant GNN encoder" in report and "| 1.2 |" in report
    assert "- label-map precision@1: raywse 1.000 beats input_saliency 0.250." in report
    # a tie is no win
    assert "- cross-family precision@10: **raywse does NOT beat input_saliency** (0.200 vs 0.200)." in report
    assert "the raywse-retrieved start saves 20.0 steps against scratch (10.0 vs 30.0 mean steps)." in report
    assert "| t2 | n/a | skipped: no compatible model of another task | | | |" in report
    assert "| retrieved:raywse | 5 | 10.0 ± 2.0 | 0 | 0.400 | 0.900 |" in report
    assert "| scratch | 5 | 30.0 ± 2.0 | 2 |" in report
    queries = ", ".join(f"{s} {scores[RAYWSE][s]['queries']}" for s in HARD)
    assert f"Queries: {queries}." in report
    assert report.endswith("`raywse.eval.report.recompute_metrics`.\n")


def test_task_databases_leave_out_the_query_lineage(view):
    """A child, its parent's run and its siblings never meet in task retrieval (lineage is scored on its own)."""
    assert not view.unrelated(9)[1] and not view.unrelated(1)[9]  # m9 is a child of m1
    assert not view.unrelated(9)[9] and view.unrelated(9)[0]
    view.parent[10], view.parent_run[10] = "m1", "r1"  # m10 becomes m9's sibling
    assert not view.unrelated(9)[10] and not view.unrelated(10)[9]
    assert view.unrelated(9).sum() == len(view.ids) - 3


def test_the_lineage_setting_re_scores_its_first_answers_with_first_layers():
    """Two candidates for one child: the stranger's vector is closer, the parent's first layer is the child's. The
    embedding alone ranks the stranger first; re-scored as a lineage search does, the parent comes first."""
    from raywse.graph.first_layer_match import FirstLayer

    view = ZooView(
        ids=["p", "s", "c"],
        task=np.array(["t0", "t0", "t1"]),
        family=np.array(["mlp"] * 3),
        split=np.array(["train", "train", "test_lineage"]),
        parent=np.array(["", "", "p"]),
        test_acc=np.array([0.9, 0.9, 0.9]),
        group=np.array([""] * 3),
        arch=np.array(["a"] * 3),
        run=np.array(["rp", "rs", "rc"]),
        parent_run=np.array(["", "", "rp"]),
        learned=np.ones(3, dtype=bool),
    )
    z = normalize(np.array([[1.0, 0.3], [1.0, 0.05], [1.0, 0.0]]))
    rows = [np.random.default_rng(seed).standard_normal((4, 5)) for seed in (0, 1)]
    mine, other = (FirstLayer(4, 1, (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)) for m in rows)
    plain = retrieval_suite(z, view, kinship=(z, z))
    rescored = retrieval_suite(z, view, kinship=(z, z), first_layers=[mine, other, mine])
    assert plain["lineage"]["MRR"] == pytest.approx(0.5)
    assert rescored["lineage"]["MRR"] == pytest.approx(1.0)
    assert rescored["lineage_embedding_only"] == plain["lineage"]
