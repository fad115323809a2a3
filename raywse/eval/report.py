"""The evaluation report: raywse against every baseline on held-out query splits, hard splits and fine-tuning.

:func:`evaluate` embeds every model of a zoo with the trained encoder ("raywse") and each baseline (fitted on the
``train`` split only), saves the embeddings, scores them and writes the report, its metrics and figures
(:class:`~raywse.core.artifacts.ReportFiles`). :func:`recompute_metrics` rebuilds the retrieval numbers from the
saved embeddings alone, and :func:`recompute_summary` the retrieval part of the summary, so the report can be
checked.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray
import torch
from tqdm import tqdm

from raywse.core import console
from raywse.core.artifacts import GraphFiles, ReportFiles, read_zoo_manifest
from raywse.core.embeddings import embeddings_table, read_embeddings, table_vectors, write_embeddings
from raywse.core.io import atomic_path, write_json_atomic
from raywse.core.ray_session import ensure_ray
from raywse.eval.config import GNN_NONEQUIVARIANT, PROBE_OUTPUTS, RAYWSE, EvalConfig
from raywse.eval.finetune import finetune_overall, finetune_task
from raywse.eval.foreign import (
    ForeignZoo,
    foreign_counts,
    foreign_labels,
    foreign_scores,
    load_foreign,
    read_foreign_manifest,
    states_activations,
)
from raywse.eval.plots import plot_precision_curves, plot_projection
from raywse.eval.probe_outputs import ProbeOutputsEmbedder
from raywse.eval.probes import accuracy_metrics, head_accuracy_metrics, recorded_accuracy_reference, structure_metrics
from raywse.eval.render import render_report
from raywse.eval.suite import retrieval_suite
from raywse.eval.summary import GOALS, NOT_MEASURED, RETRIEVAL_SUMMARY, summarize
from raywse.eval.symmetries import RESCALE_RANGE, randomised_graphs
from raywse.eval.view import ZooView, zoo_view
from raywse.graph.first_layer_match import (
    first_layer_of,
    first_layers_table,
    read_first_layers,
    table_first_layers,
    write_first_layers,
)
from raywse.models.baselines import BaselineSettings, make_baseline
from raywse.models.checkpoint import load_encoder
from raywse.models.embedder import Embedder, EncoderTrainer, GNNEmbedder, RunTrainer
from raywse.models.encoder import NeuralGraphEncoder


def evaluate(
    zoo_dir: str | os.PathLike,
    graphs_dir: str | os.PathLike,
    encoder_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: EvalConfig | None = None,
    gnn_trainer: RunTrainer | None = None,
) -> Path:
    """Run the whole evaluation; returns the path of the report (see the module docstring). ``gnn_trainer`` trains
    ``gnn_nonequivariant`` (the entry points: as raywse was, :func:`raywse.train.trainer.train_as`), its run under
    ``out_dir/baselines/gnn_nonequivariant``; without one it is fitted in one process for
    ``config.gnn_baseline_steps``."""
    config = config or EvalConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        return _evaluate(Path(zoo_dir), Path(graphs_dir), Path(encoder_dir), Path(out_dir), config, gnn_trainer)
    finally:
        torch.set_num_threads(threads)


def recompute_metrics(out_dir: str | os.PathLike, zoo_dir: str | os.PathLike, config: EvalConfig | None = None) -> dict:
    """Retrieval metrics (embedder → split → metric) from the saved embeddings and the zoo manifest alone."""
    config = config or EvalConfig()
    rows = read_zoo_manifest(zoo_dir)
    foreign_rows = read_foreign_manifest(config.foreign_dir) if config.foreign_dir else []
    first = table_first_layers(read_first_layers(Path(out_dir) / ReportFiles.FIRST_LAYERS))
    out = {}
    for path in sorted((Path(out_dir) / ReportFiles.EMBEDDINGS).glob("*.parquet")):
        table = read_embeddings(path)
        view = zoo_view(rows, table.column("model_id").to_pylist())
        z = table_vectors(table)
        database = Path(out_dir) / ReportFiles.DATABASE_EMBEDDINGS / path.name
        z_database = table_vectors(read_embeddings(database)) if database.exists() else z
        kinship = Path(out_dir) / ReportFiles.KINSHIP_EMBEDDINGS / path.name
        kin = (table_vectors(read_embeddings(kinship)), z_database) if kinship.exists() else None
        firsts = [first.get(m) for m in view.ids] if kin and first else None  # none saved: a report from before
        out[path.stem] = retrieval_suite(z, view, config.ks, config.curve_k, config.seed, kin, firsts)
        for suffix, sub in FOREIGN_SETS.items():
            foreign_path = Path(out_dir) / sub / path.name
            if foreign_rows and foreign_path.exists():
                ftable = read_embeddings(foreign_path)
                ids = ftable.column("model_id").to_pylist()
                foreign = ForeignZoo(ids, *foreign_labels(foreign_rows, ids), {}, [])
                zf = table_vectors(ftable)
                found = foreign_scores(zf, foreign, z_database, view, config.ks, config.curve_k, config.seed)
                out[path.stem] |= {split + suffix: vals for split, vals in found.items()}
    return json_safe(out)


def recompute_summary(out_dir: str | os.PathLike, zoo_dir: str | os.PathLike, config: EvalConfig | None = None) -> dict:
    """The retrieval metrics of the summary (embedder → metric, :data:`~raywse.eval.summary.RETRIEVAL_SUMMARY`)
    from the saved embeddings and the zoo manifest alone."""
    return summarize(recompute_metrics(out_dir, zoo_dir, config), RETRIEVAL_SUMMARY)


#: Each foreign set's key suffix in the scores and its embeddings directory: the files as they come, and graphified
#: with the hidden activation their manifest states (when it states one for every file).
FOREIGN_SETS = {"": ReportFiles.FOREIGN_EMBEDDINGS, "_hinted": ReportFiles.FOREIGN_HINTED_EMBEDDINGS}


def make_embedders(
    config: EvalConfig,
    encoder: NeuralGraphEncoder,
    rows: list[dict],
    foreign_descriptions: dict[str, str] | None = None,
    gnn_trainer: EncoderTrainer | None = None,
) -> dict[str, Embedder]:
    """``{name: embedder}``: raywse (the trained encoder) and each configured baseline (``gnn_trainer``: how
    ``gnn_nonequivariant`` is trained, else in this process for ``config.gnn_baseline_steps``)."""
    settings = BaselineSettings(
        encoder=encoder.config,
        descriptions={r["model_id"]: r.get("description") or r["task"] for r in rows} | (foreign_descriptions or {}),
        flat_mlp_steps=config.baseline_train_steps,
        gnn_steps=config.gnn_baseline_steps,
        gnn_trainer=gnn_trainer,
        seed=config.seed,
    )
    baselines = {
        name: ProbeOutputsEmbedder() if name == PROBE_OUTPUTS else make_baseline(name, settings)
        for name in config.baselines
    }
    return {RAYWSE: GNNEmbedder(encoder)} | baselines


def json_safe(obj):
    """NaN/inf → None, numpy scalars → Python, tuples → lists, keys → str (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _evaluate(
    zoo_dir: Path, graphs_dir: Path, encoder_dir: Path, out_dir: Path, config: EvalConfig, gnn_trainer: RunTrainer
) -> Path:
    rows = read_zoo_manifest(zoo_dir)
    graph_ids = set(pq.read_table(graphs_dir / GraphFiles.MANIFEST, columns=["model_id"])["model_id"].to_pylist())
    ids = [r["model_id"] for r in rows if r["model_id"] in graph_ids]
    view = zoo_view(rows, ids)
    by_id = {r["model_id"]: r for r in rows}
    graphs = randomised_graphs(zoo_dir, [by_id[m] for m in ids], config.seed)  # what every embedder sees
    encoder, version = load_encoder(encoder_dir)
    foreigns: dict[str, ForeignZoo] = {}
    if config.foreign_dir:
        foreigns[""] = load_foreign(config.foreign_dir)
        if states_activations(config.foreign_dir):
            foreigns["_hinted"] = load_foreign(config.foreign_dir, hinted=True)
    foreign = foreigns.get("")
    gnn_run = out_dir / ReportFiles.BASELINE_RUNS / GNN_NONEQUIVARIANT
    trainer = partial(gnn_trainer, out_dir=gnn_run) if gnn_trainer else None
    embedders = make_embedders(config, encoder, rows, foreign.descriptions if foreign else None, trainer)

    bar = console.progress(len(embedders) + len(config.finetune_tasks), "embedders and fine-tuning", "step")
    finetune: dict[str, dict] = {}

    def run_finetune(embeddings: dict[str, np.ndarray]) -> float:  # while the remote fits finish
        start = time.perf_counter()
        for task in config.finetune_tasks:
            bar.set_postfix_str(f"fine-tuning {task}")
            finetune[task] = finetune_task(task, zoo_dir, rows, view, embeddings, config)
            bar.update(1)
        return time.perf_counter() - start

    embeddings, scores, seconds = _embed_and_score(
        embedders, graphs, view, out_dir, config, version, foreigns, bar, run_finetune
    )
    bar.close()
    head = embedders[RAYWSE].accuracy  # predicted while embedding (zoo models first, then any foreign ones)
    for split, vals in head_accuracy_metrics(None if head is None else head[: len(graphs)], view).items():
        scores[RAYWSE][split].update(vals)

    metrics = json_safe(
        {
            "summary": summarize(scores),
            "summary_goals": GOALS,
            "summary_not_measured": {} if foreign else NOT_MEASURED,
            "accuracy_reference": recorded_accuracy_reference(view),
            "foreign": foreign_counts(foreigns, config.foreign_dir),
            "embedders": scores,
            "finetune": finetune,
            "finetune_overall": finetune_overall(finetune),
            "counts": _counts(view, rows),
            "symmetries": {
                "seed": config.seed,
                "per_model_seed": "sha1(f'{seed}|{model_id}')",
                "permute_hidden": True,
                "rescale_hidden": RESCALE_RANGE,
            },  # fmt: skip
            "encoder_version": version,
            "trained_as_raywse": {n: e.training for n, e in embedders.items() if getattr(e, "training", None)},
            "seconds": seconds,
            "config": asdict(config),
        }
    )
    write_json_atomic(metrics, out_dir / ReportFiles.METRICS)
    plot_projection(embeddings[RAYWSE], view, out_dir / ReportFiles.PROJECTION)
    plot_precision_curves(metrics["embedders"], out_dir / ReportFiles.PRECISION_CURVES, config.curve_k)
    report = out_dir / ReportFiles.REPORT
    with atomic_path(report) as tmp:
        tmp.write_text(render_report(metrics))
    return report


def _embed_and_score(
    embedders: dict[str, Embedder],
    graphs: list,
    view: ZooView,
    out_dir: Path,
    config: EvalConfig,
    encoder_version: str,
    foreigns: dict[str, ForeignZoo],
    bar: tqdm,
    meanwhile: Callable[[dict[str, np.ndarray]], float],
) -> tuple[dict[str, np.ndarray], dict[str, dict], dict[str, float]]:
    """Fit each embedder on the train split, embed every model (and each foreign set's, in the same call), save the
    embeddings (tagged with the encoder's version, or a baseline's name) and score them; ``meanwhile(embeddings)``
    runs once the embedders fitted here are done, before waiting for those fitted in Ray tasks (its seconds are
    recorded as ``finetune``). Returns ``(embeddings, scores, seconds)`` keyed by embedder name (scores: embedder →
    split → metric; seconds: fitting and embedding, and as ``"<name> scoring"`` saving and scoring)."""
    tasks = sorted(set(view.task))
    labels = np.array([tasks.index(t) for t in view.task])
    first_layers = [first_layer_of(g) for g in graphs]  # the lineage searches re-score with these
    write_first_layers(first_layers_table(view.ids, first_layers), out_dir / ReportFiles.FIRST_LAYERS)
    train = np.flatnonzero(view.split == "train")
    train_graphs = [graphs[i] for i in train]
    emb_dirs = (ReportFiles.EMBEDDINGS, ReportFiles.DATABASE_EMBEDDINGS, ReportFiles.KINSHIP_EMBEDDINGS)
    for stale in [p for d in (*emb_dirs, *FOREIGN_SETS.values()) for p in (out_dir / d).glob("*.parquet")]:
        stale.unlink()  # from an earlier, other run
    embeddings: dict[str, np.ndarray] = {}
    scores: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    inputs = graphs + [g for zoo in foreigns.values() for g in zoo.graphs]  # every embedder embeds the foreign sets

    def finish(
        name: str, emb_all: np.ndarray, database: np.ndarray | None, kinship: np.ndarray | None, took: float
    ) -> None:
        emb_all = np.ascontiguousarray(emb_all, dtype=np.float32)
        embeddings[name], seconds[name] = emb_all[: len(graphs)], took
        tag = encoder_version if name == RAYWSE else name
        zoo = [None if v is None else np.ascontiguousarray(v[: len(graphs)], np.float32) for v in (database, kinship)]
        start = time.perf_counter()
        scores[name] = _save_and_score(name, tag, emb_all, *zoo, view, foreigns, out_dir, config, first_layers)
        seconds[f"{name} scoring"] = time.perf_counter() - start
        bar.update(1)

    def fit_here(name: str) -> None:
        embedder = embedders[name]
        bar.set_postfix_str(name)
        start = time.perf_counter()
        embedder.fit(train_graphs, labels[train])
        emb_all = embedder.embed(inputs)
        extra = getattr(embedder, "database", None), getattr(embedder, "kinship", None)
        finish(name, emb_all, *extra, time.perf_counter() - start)

    # baselines trained on Ray Train first, here: their workers need the CPUs the Ray tasks below would hold
    on_ray_train = [n for n, e in embedders.items() if getattr(e, "trainer", None) is not None]
    for name in on_ray_train:
        fit_here(name)
    far = {n: e for n, e in embedders.items() if n in config.remote_fits and n not in on_ray_train}
    remote = _fit_remotely(far, inputs, train, labels[train], config.remote_fit_cpus)
    for name in embedders:  # the remote fits run meanwhile
        if name not in remote and name not in on_ray_train:
            fit_here(name)
    seconds["finetune"] = meanwhile(embeddings)
    for name, ref in remote.items():
        bar.set_postfix_str(name)
        finish(name, *ray.get(ref))
    in_order = list(embedders)  # the report lists embedders in their configured order
    return (
        {n: embeddings[n] for n in in_order},
        {n: scores[n] for n in in_order},
        {n: seconds[n] for n in [*in_order, "finetune", *(f"{n} scoring" for n in in_order)]},
    )


def _save_and_score(
    name: str,
    tag: str,
    emb_all: np.ndarray,
    database: np.ndarray | None,
    kinship: np.ndarray | None,
    view: ZooView,
    foreigns: dict[str, ForeignZoo],
    out_dir: Path,
    config: EvalConfig,
    first_layers: list,
) -> dict[str, dict]:
    """Save one embedder's embeddings (the zoo's rows first, then each foreign set's, in ``foreigns``' order), tagged
    ``tag``, and score them: retrieval, each foreign set (its splits suffixed), accuracy and structure probes.
    ``database``: the zoo's rows as an index stores them, where that differs from ``emb_all`` (the database the
    foreign queries search; zoo queries rank zoo models alike in either form); ``kinship``: the zoo's lineage
    queries, where they differ from ``emb_all`` (the lineage setting ranks them against ``database`` and re-scores
    the first answers with ``first_layers``, as a lineage search does)."""
    emb = emb_all[: len(view.ids)]
    for vectors, sub in ((emb, ReportFiles.EMBEDDINGS), (database, ReportFiles.DATABASE_EMBEDDINGS),
                         (kinship, ReportFiles.KINSHIP_EMBEDDINGS)):  # fmt: skip
        if vectors is not None:
            write_embeddings(embeddings_table(view.ids, vectors, tag), out_dir / sub / f"{name}.parquet")
    kin = None if kinship is None else (kinship, emb if database is None else database)
    scores = retrieval_suite(emb, view, config.ks, config.curve_k, config.seed, kin, first_layers if kin else None)
    start = len(view.ids)
    for suffix, zoo in foreigns.items():
        part, start = emb_all[start : start + len(zoo.ids)], start + len(zoo.ids)
        write_embeddings(embeddings_table(zoo.ids, part, tag), out_dir / FOREIGN_SETS[suffix] / f"{name}.parquet")
        found = foreign_scores(
            part, zoo, emb if database is None else database, view, config.ks, config.curve_k, config.seed
        )
        scores |= {split + suffix: vals for split, vals in found.items()}
    for extra in (accuracy_metrics(emb, view, config.seed), structure_metrics(emb, view, config.seed)):
        for split, vals in extra.items():
            scores.setdefault(split, {}).update(vals)
    return scores


def _fit_remotely(
    embedders: dict[str, Embedder],
    inputs: list,
    train: np.ndarray,
    train_labels: np.ndarray,
    cpus: int,
) -> dict[str, ray.ObjectRef]:
    """Start one Ray task per embedder (``cpus`` CPUs and torch threads each, at most the cluster's) that fits it on
    the train graphs and embeds ``inputs``; returns ``{name: ref to (embeddings, database form or None, lineage queries
    or None, seconds)}``."""
    if not embedders:
        return {}
    ensure_ray()
    cpus = max(1, min(cpus, int(ray.cluster_resources().get("CPU", 1))))
    graphs_ref = ray.put(inputs)  # one copy in the object store, shared by every task
    refs = {}
    for name, embedder in embedders.items():
        task = _fit_and_embed.options(num_cpus=cpus)
        refs[name] = task.remote(embedder, graphs_ref, train, train_labels, cpus)
    return refs


@ray.remote
def _fit_and_embed(
    embedder: Embedder, graphs: list, train: np.ndarray, labels: np.ndarray, threads: int
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, float]:
    """A Ray task: fit ``embedder`` on ``graphs[train]``, embed ``graphs``; returns (embeddings, database form or
    None, lineage queries or None, seconds)."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    embedder.fit([graphs[i] for i in train], labels)
    embeddings = embedder.embed(graphs)
    extra = getattr(embedder, "database", None), getattr(embedder, "kinship", None)
    return embeddings, *extra, time.perf_counter() - start


def _counts(view: ZooView, rows: list[dict]) -> dict:
    return {
        "models": len(view.ids),
        "manifest_models": len(rows),
        "tasks": len(set(view.task)),
        "runs": len(set(view.run)),
        "learned": int(view.learned.sum()),
        "architectures": len(set(view.arch)),
        "splits": {s: int((view.split == s).sum()) for s in sorted(set(view.split))},
        "families": {f: int((view.family == f).sum()) for f in sorted(set(view.family))},
    }
