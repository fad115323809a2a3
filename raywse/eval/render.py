"""The Markdown report: :func:`render_report` turns ``metrics.json``'s content into ``report.md``, every number read
from the metrics, one function per section."""

from __future__ import annotations

from raywse.core.artifacts import ReportFiles
from raywse.eval.config import HARD, HELD_OUT, RAYWSE
from raywse.eval.render_foreign import foreign_section
from raywse.eval.summary import _fmt, summary_section
from raywse.eval.tables import embedder_cell, markdown_table, split_tables

#: What each embedder is, for the overview table (``{...}`` fields come from the evaluation config).
DESCRIPTIONS = {
    RAYWSE: "permutation-equivariant GNN encoder over weights and probe responses, its learned embedding joined with "
    "the response fingerprint (a network never run on probes: its first-layer moments) and, lightly weighted, the "
    "confidence statistics of its responses (trained by `raywse train`, not refitted here); its lineage queries are "
    "its first-layer sketch and a code of its layer structure",
    "arch_oracle": "reference row, no weights: one-hot of the architecture (layer structure of the graph), so "
    "models of the query's architecture rank first, in random order",
    "random_init_gnn": "reference row: the raywse encoder architecture with untrained, seeded weights (its "
    "embedding includes the same response fingerprint and confidence statistics)",
    "first_layer_sketch": "reference row, training-free: a kernel sketch of the set of first-layer weight directions "
    "(exactly invariant to the symmetries), which fine-tuning keeps: the lineage reference",
    "probe_outputs": "reference row, training-free: softmax outputs of each network on 64 fixed inputs from the train "
    "split of its dataset (its recorded input normalisation; a foreign file: its output responses on the probes it "
    "was graphified with), compared by cosine",
    "weight_stats": "per-layer weight / bias statistics (Unterthiner et al. 2020), standardised",
    "weight_pca": "PCA of flattened weights (not permutation invariant)",
    "flat_mlp": "MLP on flattened weights, raywse's contrastive loss and batches, {baseline_train_steps} steps",
    "gnn_nonequivariant": "raywse encoder (probe features, fingerprint) + hidden-neuron index embeddings, raywse's "
    "loss and batches, {gnn_baseline_steps} one-rank steps (raywse's budget)",
    "gnn_nonequivariant_trained_as_raywse": "raywse encoder (probe features, fingerprint) + hidden-neuron index "
    "embeddings, trained as raywse was: its training run's config on Ray Train ({epochs} epochs, {rank_steps} "
    "optimiser steps over the ranks, the same loss), its views also permuting hidden neurons",
    "input_saliency": "mean absolute outgoing weight of each input position; training-free",
    "metadata_text": "TF-IDF + SVD of the manifest's free-text description (no weights)",
}


def render_report(metrics: dict) -> str:
    """The markdown report, every number read from ``metrics``."""
    scores, cfg = metrics["embedders"], metrics["config"]
    ks = cfg["ks"]
    lines = [
        *_overview(metrics),
        *summary_section(metrics),
        *_embedders(metrics),
        *_hard_splits(scores, ks),
        *_saliency_section(scores, ks),
        *_retrieval_section(scores, ks),
        *_accuracy_section(scores),
        *_structure_section(scores),
        *foreign_section(metrics.get("foreign"), scores),
        *_finetune_section(metrics["finetune"], metrics.get("finetune_overall", {}), cfg),
        *_caveats(scores),
        *_figures(),
    ]
    return "\n".join(lines)


def _pm(half_width: float | None) -> str:
    return "" if half_width is None else f" ± {half_width:.1f}"


def _describe(name: str, metrics: dict) -> str:
    """The embedder's line, its fields read from the evaluation config (or from how it was trained as raywse)."""
    trained = metrics.get("trained_as_raywse", {}).get(name)
    if trained is not None:
        return DESCRIPTIONS[f"{name}_trained_as_raywse"].format(**trained)
    return DESCRIPTIONS[name].format(**metrics["config"]) if name in DESCRIPTIONS else name


def _comparison_lines(scores: dict, rival: str, checks: list[tuple[str, str, str]]) -> list[str]:
    """Plain statements of where raywse does / does not beat ``rival`` (higher is better for every check)."""
    lines = []
    for split, metric, label in checks:
        ours, theirs = scores[RAYWSE].get(split, {}).get(metric), scores[rival].get(split, {}).get(metric)
        if ours is None or theirs is None:
            lines.append(f"- {label}: not measurable on this zoo (no queries).")
        elif ours > theirs:
            lines.append(f"- {label}: raywse {ours:.3f} beats {rival} {theirs:.3f}.")
        else:
            lines.append(f"- {label}: **raywse does NOT beat {rival}** ({ours:.3f} vs {theirs:.3f}).")
    return lines


def _claim_verdict(precision: float | None, ceiling: float | None) -> str:
    if precision is None or ceiling is None:
        return "Not measurable on this zoo."
    if precision >= 0.95 * ceiling:
        return "The claim is reproduced (relative to the ceiling)."
    return f"The claim is NOT reproduced here: {precision / ceiling:.0%} of the ceiling."


def _overview(metrics: dict) -> list[str]:
    """Title and what was evaluated."""
    counts = metrics["counts"]
    return [
        "# raywse evaluation report",
        "",
        f"Zoo: {counts['models']} graphified models of {counts['manifest_models']} in the manifest "
        f"({counts.get('runs', 'n/a')} training runs, {counts.get('learned', 'n/a')} models learned their task), "
        f"{counts['tasks']} tasks, {counts.get('architectures', 'n/a')} architectures; families "
        f"{counts['families']}; splits {counts['splits']}. Encoder version `{metrics['encoder_version']}`. Every "
        "embedder is fitted on the `train` split only; queries are held-out models. Before any embedder sees a "
        "model, its hidden neurons are randomly permuted, positively rescaled and sign-flipped where the activation "
        "allows (function unchanged; seed "
        f"{metrics.get('symmetries', {}).get('seed', 'n/a')}, per model from its id). Task retrieval: queries and "
        "relevant items are models that learned their task (test accuracy ≥ the task's majority-class rate + 0.1); "
        "the query's own training run (its other snapshots) is never in its database. Cosine similarity, exact ties "
        f"broken in a random order (seed {metrics['config']['seed']}); metrics averaged over queries with at least "
        "one relevant database item (`queries`). The raywse row is ONE training run of the encoder (one seed): its "
        "run-to-run spread is not in these tables, and differences of a few hundredths may lie within it.",
    ]


def _embedders(metrics: dict) -> list[str]:
    """One line per embedder."""
    return [
        "",
        "## Embedders",
        "",
        "| embedder | what it is | fit + embed seconds | scoring seconds |",
        "|---|---|---|---|",
        *[
            f"| {name} | {_describe(name, metrics)} | {metrics['seconds'].get(name, 0.0):.1f} | "
            f"{metrics['seconds'].get(f'{name} scoring', float('nan')):.1f} |"
            for name in metrics["embedders"]
        ],
    ]


def _hard_splits(scores: dict, ks: list[int]) -> list[str]:
    lines = [
        "",
        "## Hard splits",
        "",
        "- **cross-family**: held-out queries of each family (every family of the zoo) against a database of the other "
        "families only; relevant = same task.",
        "- **label-map**: held-out queries of tasks that share inputs and output count with other tasks (e.g. the "
        "binary digits tasks, digits all10/shift1); the database holds only the query's group; relevant = same task.",
        "- **lineage**: fine-tuned children as queries against all other models; relevant = parent and siblings. The "
        "GNN embedders (raywse and the GNN rows) answer with their lineage queries, as `raywse search --relation "
        "lineage` does: the first-layer sketch with a code of the layer structure, against the index, its first "
        "50 answers then re-scored by pairing the two networks' first-layer neurons one to one "
        "(`raywse.graph.first_layer_match`; chosen on a second zoo) — training-free and the same for the three, so "
        "their lineage column says nothing of training; the structure's share (0.2) was picked on these children. "
        "Every other row ranks with its one embedding.",
        "",
        f"| embedder | cross-family P@{ks[-1]} | cross-family mAP | label-map P@1 | label-map mAP | lineage MRR | "
        "lineage mAP | acc. R² (held-out) | acc. Kendall τ (held-out) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in scores.items():
        cells = [
            s["cross_family"].get(f"precision@{ks[-1]}"),
            s["cross_family"].get("mAP"),
            s["label_map"].get(f"precision@{ks[0]}"),
            s["label_map"].get("mAP"),
            s["lineage"].get("MRR"),
            s["lineage"].get("mAP"),
            s.get("held_out", {}).get("acc_R2"),
            s.get("held_out", {}).get("acc_kendall_tau"),
        ]
        lines.append(f"| {embedder_cell(name)} | {' | '.join(_fmt(c) for c in cells)} |")
    alone = scores[RAYWSE].get("lineage_embedding_only", {}).get("mAP")
    if alone is not None:
        lines += ["", f"raywse's lineage mAP without the re-scoring (its embedding alone): {_fmt(alone)}."]
    return [*lines, "", "Queries: " + ", ".join(f"{s} {scores[RAYWSE][s].get('queries', 0)}" for s in HARD) + "."]


def _saliency_section(scores: dict, ks: list[int]) -> list[str]:
    """The ≈0.99 precision@10 claim of the input-saliency baseline, and raywse against it (when it was run)."""
    if "input_saliency" not in scores:
        return []
    same = scores["input_saliency"].get("same_family", {})
    sal, ceiling = same.get(f"precision@{ks[-1]}"), same.get(f"precision@{ks[-1]}_ceiling")
    return [
        "",
        "## raywse against the training-free input-saliency baseline",
        "",
        "Claim under test: the training-free input-saliency baseline reaches ≈0.99 precision@10 on same-family "
        f"task retrieval. Measured here (held-out queries, database = same family): precision@{ks[-1]} = "
        f"{_fmt(sal)}, against a ceiling of {_fmt(ceiling)} (the most a perfect ranking scores when a task has fewer "
        f"than {ks[-1]} other models of the family) and mAP {_fmt(same.get('mAP'))}. " + _claim_verdict(sal, ceiling),
        "",
        "Where raywse stands against it (higher is better everywhere):",
        "",
        *_comparison_lines(
            scores,
            "input_saliency",
            [
                ("cross_family", f"precision@{ks[-1]}", "cross-family precision@10"),
                ("cross_family", "mAP", "cross-family mAP"),
                ("label_map", f"precision@{ks[0]}", "label-map precision@1"),
                ("label_map", "mAP", "label-map mAP"),
                ("lineage", "mAP", "lineage mAP"),
                ("held_out", "acc_kendall_tau", "accuracy-prediction Kendall τ"),
                ("same_family", f"precision@{ks[-1]}", "same-family precision@10"),
                ("test_seed", f"precision@{ks[-1]}", "test_seed precision@10"),
            ],
        ),
    ]


def _retrieval_section(scores: dict, ks: list[int]) -> list[str]:
    columns = [f"precision@{k}" for k in ks] + [f"recall@{ks[-1]}", "mAP", "MRR", "queries"]
    lines = [
        "",
        "## Task retrieval per held-out split",
        "",
        "Database = all other models (`cross_arch`: except those of the query's architecture; `same_family`: the "
        "query's family only; `cross_family_*`: the other families only); relevant = same task.",
    ]
    directions = [s for s in scores[RAYWSE] if s.startswith("cross_family_")]
    for split in (*HELD_OUT, "held_out", "cross_arch", "same_family", *directions):
        lines += ["", f"### {split}", "", *markdown_table(scores, split, columns)]
    return lines


def _accuracy_section(scores: dict) -> list[str]:
    columns = ["acc_R2", "acc_kendall_tau", "acc_kendall_tau_within", "ridge_kendall_tau", "gbr_kendall_tau"]
    if any("head_R2" in v for v in scores[RAYWSE].values()):
        columns += ["head_R2", "head_kendall_tau", "head_kendall_tau_within"]
    return [
        "",
        "## Accuracy prediction",
        "",
        "Ridge regression on the embeddings, fitted on the train split's test accuracy; R² and Kendall τ of the "
        "held-out predictions; `*_within`: Kendall τ inside each (task, family) group of ≥ 3 models (groups with "
        "equal accuracies skipped, constant predictions score 0), averaged over groups. `head_*`: the encoder's own "
        "accuracy head (when it has one).",
        "",
        *split_tables(scores, (*HELD_OUT, "held_out"), columns),
    ]


def _structure_section(scores: dict) -> list[str]:
    columns = ["kmeans_ARI", "kmeans_NMI", "kmeans_purity", "spearman_dist_accgap"]
    return [
        "## Embedding structure",
        "",
        "k-means (k = number of tasks among the models) on held-out models, scored against task labels; "
        "Spearman ρ between cosine distance and |test-accuracy gap| over same-task pairs (a query and every "
        "other model of its task).",
        "",
        *split_tables(scores, (*HELD_OUT, "held_out"), columns),
    ]


def _finetune_section(finetune: dict, overall: dict, cfg: dict) -> list[str]:
    lines = [
        "",
        "## Fine-tuning steps saved",
        "",
        f"Target tasks: {', '.join(finetune)} (by default the tasks held out of training entirely, `test_task`). "
        f"Up to {cfg['finetune_queries']} held-out models of each task query the database; each embedder's top model "
        "of another task with matching inputs and output count is fine-tuned (Adam, lr "
        f"{cfg['finetune_lr']}, batch {cfg['finetune_batch_size']}, at most {cfg['finetune_steps']} steps, test "
        f"accuracy checked every {cfg['finetune_eval_every']} steps) until it reaches the target: "
        f"{cfg['target_fraction']:.0%} of the task's median zoo test accuracy, but at least the majority-class rate "
        f"+ {cfg['target_margin']}. Per query, {cfg['finetune_repeats']} random compatible zoo model(s) and "
        f"{cfg['finetune_repeats']} fresh init(s) of the first retrieved architecture. Runs that never reach the "
        "target count as the full budget (censored, counted), so mean steps understate the gap; 0 steps means the "
        "start model already met the target. ± is a 95% normal interval over runs.",
        "",
        "| arm (all tasks) | runs | mean steps | censored | mean start acc | mean final acc |",
        "|---|---|---|---|---|---|",
    ]
    for arm, s in overall.items():
        lines.append(
            f"| {arm} | {s['runs']} | {s['mean_steps']:.1f}{_pm(s.get('ci95'))} | {s['censored']} | "
            f"{_fmt(s['mean_start_acc'])} | {_fmt(s['mean_final_acc'])} |"
        )
    lines += ["", "| task | target acc | arm | runs | mean steps | censored |", "|---|---|---|---|---|---|"]
    for task, res in finetune.items():
        if "skipped" in res:
            lines.append(f"| {task} | n/a | skipped: {res['skipped']} | | | |")
            continue
        for arm, s in res["summary"].items():
            lines.append(
                f"| {task} | {_fmt(res['target_acc'])} | {arm} | {s['runs']} | {s['mean_steps']:.1f} | "
                f"{s['censored']} |"
            )
    return [*lines, "", *_steps_saved("all tasks", overall)]


def _steps_saved(task: str, summary: dict) -> list[str]:
    """Whether the raywse-retrieved start saves fine-tuning steps against each other arm."""
    ours = summary.get(f"retrieved:{RAYWSE}")
    if not ours:
        return []
    notes = []
    for rival in ("random", "scratch", "retrieved:input_saliency"):
        if rival in summary:
            diff = summary[rival]["mean_steps"] - ours["mean_steps"]
            if diff > 0:
                verdict = f"saves {diff:.1f} steps against"
            elif diff == 0:
                verdict = "ties with"
            else:
                verdict = f"does NOT save steps: {-diff:.1f} more than"
            notes.append(
                f"- {task}: the raywse-retrieved start {verdict} {rival} "
                f"({ours['mean_steps']:.1f} vs {summary[rival]['mean_steps']:.1f} mean steps)."
            )
    return notes


def _caveats(scores: dict) -> list[str]:
    few = sorted(s for s in (*HELD_OUT, *HARD) if (scores[RAYWSE].get(s, {}).get("queries") or 0) < 30)
    lines = [
        "",
        "## Caveats",
        "",
        f"- Fewer than 30 scored queries in: {', '.join(few) or 'none'}; differences of a few hundredths there are "
        "within query-sampling noise.",
        "- `test_lineage` task retrieval is easy when a child keeps its parent's task (the parent is in the database); "
        "the lineage hard split scores kinship instead.",
    ]
    if "arch_oracle" in scores:
        lines.append(
            "- `arch_oracle` reads no weights: whatever it scores, the architecture alone gives away; a weight-space "
            "method is worth what it adds above it."
        )
    if "metadata_text" in scores:
        lines.append(
            "- `metadata_text` reads descriptions, not weights: it is a reference for what metadata alone gives, "
            "not a weight-space method."
        )
    return lines


def _figures() -> list[str]:
    return [
        "",
        "## Figures",
        "",
        f"![PCA of raywse embeddings]({ReportFiles.PROJECTION})",
        "",
        f"![precision@k]({ReportFiles.PRECISION_CURVES})",
        "",
        f"Every number above is in `{ReportFiles.METRICS}`; retrieval numbers can be recomputed from "
        f"`{ReportFiles.EMBEDDINGS}/*.parquet` with `raywse.eval.report.recompute_metrics`.",
        "",
    ]
