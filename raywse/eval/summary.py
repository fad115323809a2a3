"""The machine-readable summary (``metrics.json``'s ``"summary"``: embedder → metric → value) and its goals.

Every summary metric is read from the scores the suite and the probes computed (:data:`SOURCES`); metrics that this
evaluation cannot measure yet are ``None`` with the reason in :data:`NOT_MEASURED`, never a made-up number.
:func:`summary_section` is the report's summary section (its first table).
"""

from __future__ import annotations

from raywse.core.artifacts import ReportFiles
from raywse.eval.config import RAYWSE

#: The summary's metrics, in report order.
SUMMARY_METRICS = (
    "task_p10_cross_arch",
    "cross_family_p10",
    "label_map_p1",
    "lineage_map",
    "acc_tau_pooled",
    "acc_tau_within",
    "foreign_p10",
    "foreign_to_zoo_p10",
)
#: Where each measured summary metric lives in an embedder's scores: ``(split, metric)``.
SOURCES = {
    "task_p10_cross_arch": ("cross_arch", "precision@10"),
    "cross_family_p10": ("cross_family", "precision@10"),
    "label_map_p1": ("label_map", "precision@1"),
    "lineage_map": ("lineage", "mAP"),
    "acc_tau_pooled": ("held_out", "acc_kendall_tau"),
    "acc_tau_within": ("held_out", "acc_kendall_tau_within"),
    "foreign_p10": ("foreign", "precision@10"),
    "foreign_to_zoo_p10": ("foreign_to_zoo", "precision@10"),
}
#: The summary metrics that come from rankings alone (recomputable from the saved embeddings and the manifest).
RETRIEVAL_SUMMARY = (
    "task_p10_cross_arch", "cross_family_p10", "label_map_p1", "lineage_map", "foreign_p10", "foreign_to_zoo_p10",
)  # fmt: skip
#: Summary metrics this evaluation does not measure, and why.
NOT_MEASURED = {
    "foreign_p10": "no foreign zoo given (EvalConfig.foreign_dir)",
    "foreign_to_zoo_p10": "no foreign zoo given (EvalConfig.foreign_dir)",
}
#: The goals of the encoder v2 issue for the raywse row (every metric: higher is better, goal = at least this).
GOALS = {
    "task_p10_cross_arch": 0.95,
    "cross_family_p10": 0.90,
    "label_map_p1": 0.95,
    "lineage_map": 0.95,
    "acc_tau_pooled": 0.90,
    "acc_tau_within": 0.75,
    "foreign_p10": 0.95,
    "foreign_to_zoo_p10": 0.90,
}
#: One line per summary metric, for the report.
DEFINITIONS = {
    "task_p10_cross_arch": "held-out queries (learned, not fine-tuned children); database = every model outside "
    "the query's architecture and lineage; relevant = learned, same task; precision@10",
    "cross_family_p10": "held-out queries against the other families only; relevant = same task; precision@10",
    "label_map_p1": "held-out queries of tasks sharing inputs and output count, database = that group; precision@1",
    "lineage_map": "fine-tuned children as queries; relevant = the parent's run and sibling runs; mAP",
    "acc_tau_pooled": "Kendall τ of predicted against actual test accuracy over all held-out models (ridge or "
    "gradient-boosted regressor on the embeddings, whichever has the higher τ on the validation split)",
    "acc_tau_within": "the same τ within each (task, family) group of ≥ 3 held-out models, averaged over groups",
    "foreign_p10": "learned checkpoints of the foreign zoo (other code, no layer spec) as queries against the other "
    "foreign checkpoints; relevant = same task; precision@10",
    "foreign_to_zoo_p10": "learned foreign checkpoints of a task the zoo has, as queries against the whole zoo; "
    "relevant = learned zoo models of the same task; precision@10",
}


def summary_row(scores: dict, metrics: tuple[str, ...] = SUMMARY_METRICS) -> dict[str, float | None]:
    """One embedder's summary (``scores``: split → metric); ``None`` where unmeasured or without queries."""
    row: dict[str, float | None] = {}
    for name in metrics:
        split, metric = SOURCES.get(name, ("", ""))
        row[name] = scores.get(split, {}).get(metric) if name in SOURCES else None
    return row


def summarize(scores: dict, metrics: tuple[str, ...] = SUMMARY_METRICS) -> dict[str, dict]:
    """``{embedder: {metric: value}}`` from ``scores`` (embedder → split → metric)."""
    return {name: summary_row(s, metrics) for name, s in scores.items()}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def summary_section(metrics: dict) -> list[str]:
    """The summary table (every embedder, the goals beside them) and where raywse meets and misses the goals."""
    summary, goals = metrics["summary"], metrics["summary_goals"]
    unmeasured = metrics["summary_not_measured"]
    lines = [
        "",
        "## Summary",
        "",
        f"`{ReportFiles.METRICS}` holds this table as `summary`; the goal row is the encoder v2 issue's goal for the "
        "raywse row (higher is better everywhere).",
        "",
        f"| embedder | {' | '.join(SUMMARY_METRICS)} |",
        "|---" * (len(SUMMARY_METRICS) + 1) + "|",
    ]
    for name, row in summary.items():
        cells = ["not measured" if m in unmeasured else _fmt(row.get(m)) for m in SUMMARY_METRICS]
        lines.append(f"| {f'**{name}**' if name == RAYWSE else name} | {' | '.join(cells)} |")
    lines.append(f"| goal | {' | '.join(f'≥ {goals[m]:.2f}' if m in goals else '' for m in SUMMARY_METRICS)} |")
    lines += ["", *_goal_lines(summary.get(RAYWSE, {}), goals, unmeasured), *_rows_above(summary)]
    lines += [*_accuracy_reference(metrics.get("accuracy_reference") or {}), ""]
    return lines + [f"- `{m}`: {DEFINITIONS[m]}." for m in SUMMARY_METRICS if m in DEFINITIONS]


def _goal_lines(row: dict, goals: dict, unmeasured: dict) -> list[str]:
    """Which goals raywse meets and misses, with the numbers."""
    met, missed, no_queries = [], [], []
    for metric in SUMMARY_METRICS:  # in table order (metrics.json sorts its keys)
        if metric in unmeasured or metric not in goals:
            continue
        value, goal = row.get(metric), goals[metric]
        if value is None:
            no_queries.append(metric)
        elif value >= goal:
            met.append(f"{metric} {value:.3f} ≥ {goal:.2f}")
        else:
            missed.append(f"{metric} {value:.3f} < {goal:.2f}")
    measured = len(met) + len(missed)
    lines = [
        f"- raywse meets {len(met)} of {measured} measured goals" + (f": {'; '.join(met)}." if met else "."),
        f"- raywse misses {len(missed)} of {measured}" + (f": {'; '.join(missed)}." if missed else "."),
    ]
    if no_queries:
        lines.append(f"- Not measurable on this zoo (no queries or no held-out models): {', '.join(no_queries)}.")
    return lines + [f"- `{m}`: not measured: {unmeasured[m]}." for m in SUMMARY_METRICS if m in unmeasured]


def _rows_above(summary: dict) -> list[str]:
    """The rows that score above raywse, per summary metric."""
    ours = summary.get(RAYWSE, {})
    parts = []
    for metric in SUMMARY_METRICS:
        value = ours.get(metric)
        if value is None:
            continue
        others = {n: r.get(metric) for n, r in summary.items() if n != RAYWSE}
        above = [f"{n} {v:.3f}" for n, v in others.items() if v is not None and v > value]
        if above:
            parts.append(f"{metric} (raywse {value:.3f}): {', '.join(above)}")
    if not parts:
        return ["- No other row scores above raywse on a measured metric."]
    return [f"- Rows above raywse: {'; '.join(parts)}."]


def _accuracy_reference(reference: dict) -> list[str]:
    """The recorded train accuracy's τ, for scale beside the accuracy goals (not a row: it is metadata)."""
    if not reference:
        return []
    pooled, within = reference.get("acc_tau_pooled"), reference.get("acc_tau_within")
    why = " (no group of ≥ 3 held-out models to rank within)" if within is None else ""
    return [
        "- For scale beside the accuracy goals (not a row: metadata no embedder reads): each held-out model's own "
        "train-split accuracy, as the zoo recorded it, ranks the held-out models' test accuracy at "
        f"acc_tau_pooled {_fmt(pooled)} / acc_tau_within {_fmt(within)}{why}."
    ]


#: Short column names for the terminal table, in :data:`SUMMARY_METRICS` order.
SHORT_NAMES = ("cross_arch", "cross_fam", "label_map", "lineage", "acc_τ", "acc_τ_in", "foreign", "f→zoo")


def summary_console_table(metrics: dict) -> list[str]:
    """The summary as a fixed-width text table (every row, then the goals), for the end of a run's console output."""
    summary, goals = metrics["summary"], metrics["summary_goals"]
    width = max(len(n) for n in [*summary, "goal"]) + 1
    lines = [" " * width + " ".join(f"{s:>10}" for s in SHORT_NAMES)]
    for name in sorted(summary, key=lambda n: n != RAYWSE):  # raywse first, the rest as given
        row = summary[name]
        lines.append(f"{name:<{width}}" + " ".join(f"{_fmt(row.get(m)):>10}" for m in SUMMARY_METRICS))
    goal_cells = [f"≥ {goals[m]:.2f}" if m in goals else "" for m in SUMMARY_METRICS]
    lines.append(f"{'goal':<{width}}" + " ".join(f"{c:>10}" for c in goal_cells))
    hinted = metrics.get("embedders", {}).get(RAYWSE, {})
    if "foreign_to_zoo_hinted" in hinted:  # the foreign files as a user following the README passes them
        p10 = [_fmt(hinted.get(split, {}).get("precision@10")) for split in ("foreign_hinted", "foreign_to_zoo_hinted")]
        lines.append(f"raywse on the foreign files with their activation and the zoo's probe inputs: foreign {p10[0]}, "
                     f"f→zoo {p10[1]} (the report's foreign section)")  # fmt: skip
    reference = metrics.get("accuracy_reference") or {}
    if reference:  # what the accuracy goals ask, beside what the zoo's own metadata achieves
        lines.append(f"each held-out model's recorded train accuracy as the prediction: acc_τ "
                     f"{_fmt(reference['acc_tau_pooled'])}, acc_τ_in {_fmt(reference['acc_tau_within'])}")  # fmt: skip
    return lines
