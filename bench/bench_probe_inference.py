"""What probe inference buys foreign checkpoints, and what it depends on: the foreign columns under each way of probing.

Usage: ``python bench/bench_probe_inference.py --run RUN`` (a main-job output: ``RUN/zoo``, ``RUN/foreign``,
``RUN/train/encoder``, ``RUN/report``) → ``bench/results/probe_inference.json``.

The foreign zoo's files (``foreign/train_foreign.py``: no layer spec, their own input normalisation — digits scaled
to [-1, 1], tabular features divided by their largest absolute train value) are graphified five ways and embedded with
the run's encoder; each is scored as the main job scores its summary's foreign columns (``foreign_p10``,
``foreign_to_zoo_p10``, the zoo in its stored database form from ``RUN/report``):

- ``none``: no inference (the files as sessions 8–19 graphified them: activation unknown, never run on probes);
- ``zoo_norms``: inference over the zoo's two normalisations only (``unit``, ``standard``), none of which is the
  foreign code's;
- ``inferred``: inference over the whole catalogue (what the main job does), which holds the foreign code's two
  normalisations among the common ones (``signed``, ``maxabs``);
- ``stated_activation``: the manifest's activation stated, the probe set inferred from the whole catalogue;
- ``hinted``: the activation stated and the foreign code's own ``probes.npz`` (the zoo's rows in its normalisation).

It also counts, for ``inferred``, the probe sets chosen and how often the inferred activation is the manifest's.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from _machine import load, run_argument, save_results

from raywse.core.artifacts import ForeignFiles, ReportFiles, RunLayout, read_zoo_manifest
from raywse.core.embeddings import read_embeddings, table_vectors
from raywse.eval.foreign import ForeignZoo, foreign_labels, foreign_scores, read_foreign_manifest
from raywse.eval.view import zoo_view
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint
from raywse.graph.probes import INFERRED, NORM_SEPARATOR, ProbeFile
from raywse.models.checkpoint import load_encoder
from raywse.models.embedder import GNNEmbedder
from raywse.zoo.probe_catalogue import zoo_catalogue

RESULTS = Path(__file__).resolve().parent / "results" / "probe_inference.json"


def zoo_norms_only(size: int) -> list:
    """The catalogue without the normalisations the zoo never trains with."""
    return [c for c in zoo_catalogue(size) if c.source.split(NORM_SEPARATOR)[1] in ("unit", "standard")]


def main() -> None:
    run_dir = run_argument(__doc__)
    load_before = load()
    run = RunLayout(run_dir)
    rows = read_foreign_manifest(run.foreign)
    probes = ProbeFile(run.foreign / ForeignFiles.PROBES)
    database = read_embeddings(run.report / ReportFiles.DATABASE_EMBEDDINGS / "raywse.parquet")
    view = zoo_view(read_zoo_manifest(run.zoo), database.column("model_id").to_pylist())
    encoder, version = load_encoder(run.encoder)
    embedder = GNNEmbedder(encoder)
    ways = {  # name -> (activation of a row, probes_for, catalogue)
        "none": (lambda r: "", None, None),
        "zoo_norms": (lambda r: "", None, zoo_norms_only),
        "inferred": (lambda r: "", None, zoo_catalogue),
        "stated_activation": (lambda r: r["activation"], None, zoo_catalogue),
        "hinted": (lambda r: r["activation"], lambda _: probes, None),
    }
    results: dict = {"encoder_version": version, "files": len(rows)}
    for name, (activation, probes_for, catalogue) in ways.items():
        start, graphs, refused = time.perf_counter(), [], {}
        for r in rows:
            try:
                graphs.append(graphify_checkpoint(str(run.foreign / r["file"]), r["model_id"], probes_for=probes_for,
                                                  activation=activation(r), catalogue=catalogue))  # fmt: skip
            except GraphifyError as exc:
                refused[r["file"]] = f"{exc.stage}: {exc.reason}"
        graphify_s = time.perf_counter() - start
        ids = [g.model_id for g in graphs]
        zoo = ForeignZoo(ids, *foreign_labels(rows, ids), {}, graphs)
        scores = foreign_scores(embedder.embed(graphs), zoo, table_vectors(database), view, (10,), 10, seed=0)
        results[name] = {
            "foreign_p10": round(scores["foreign"]["precision@10"], 3),
            "foreign_to_zoo_p10": round(scores["foreign_to_zoo"]["precision@10"], 3),
            "graphify_s": round(graphify_s, 2),
            "refused": refused,
        }
        if name == "inferred":
            parts = [g.probe_source.partition(INFERRED) for g in graphs]
            results[name]["probe_sources"] = dict(Counter(p[0] for p in parts).most_common())
            stated = {r["model_id"]: r["activation"] for r in rows}
            agree = Counter((stated[g.model_id], p[2].strip()) for g, p in zip(graphs, parts, strict=True))
            results[name]["stated_vs_inferred_activation"] = {f"{s} -> {i}": n for (s, i), n in agree.most_common()}
        print(name, results[name], flush=True)
    save_results(RESULTS, results, load_before, run=str(run_dir))


if __name__ == "__main__":
    main()
