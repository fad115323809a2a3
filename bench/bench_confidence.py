"""What the confidence statistics of raywse's embedding do: the evaluation's summary numbers of the saved raywse
embeddings with and without their confidence part, side by side (one run, the same embeddings).

Usage: ``python bench/bench_confidence.py --report RUN/report --zoo RUN/zoo --encoder RUN/train/encoder
[--out bench/results/confidence.json]`` on an evaluation the demo wrote. "Without" drops the embedding's
``confidence`` part (:attr:`~raywse.models.encoder.NeuralGraphEncoder.parts`) and renormalises the rest, which is the
embedding the same encoder gives with ``confidence_weight`` 0; the accuracy columns are the evaluation's own
regressors (:func:`raywse.eval.probes.accuracy_metrics`), the retrieval columns its suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from raywse.core.artifacts import ReportFiles, read_zoo_manifest
from raywse.core.embeddings import read_embeddings, table_vectors
from raywse.eval.config import RAYWSE
from raywse.eval.probes import accuracy_metrics
from raywse.eval.suite import retrieval_suite
from raywse.eval.summary import SUMMARY_METRICS, summary_row
from raywse.eval.view import zoo_view
from raywse.models.checkpoint import load_encoder

sys.path.insert(0, str(Path(__file__).parent))
from _machine import load, machine  # noqa: E402

#: The zoo columns of the summary (the foreign ones need the foreign zoo's embeddings).
ZOO_COLUMNS = tuple(m for m in SUMMARY_METRICS if not m.startswith("foreign"))


def summary(z: np.ndarray, view, seed: int = 0) -> dict[str, float]:
    """The zoo columns of the evaluation's summary for embeddings ``z``."""
    scores = retrieval_suite(z, view, seed=seed)
    for split, vals in accuracy_metrics(z, view, seed).items():
        scores.setdefault(split, {}).update(vals)
    return {name: round(float(value), 4) for name, value in summary_row(scores, ZOO_COLUMNS).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", required=True, help="an evaluation's output directory")
    ap.add_argument("--zoo", required=True)
    ap.add_argument("--encoder", required=True, help="the encoder that made the embeddings (for its parts)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "confidence.json"))
    args = ap.parse_args()
    encoder, version = load_encoder(args.encoder)
    part = encoder.parts["confidence"]
    if part.stop == part.start:
        raise SystemExit(f"{args.encoder}: this encoder's embedding has no confidence part")
    table = read_embeddings(Path(args.report) / ReportFiles.EMBEDDINGS / f"{RAYWSE}.parquet")
    z = table_vectors(table)
    view = zoo_view(read_zoo_manifest(args.zoo), table.column("model_id").to_pylist())
    without = np.delete(z, np.arange(part.start, part.stop), axis=1)
    without /= np.linalg.norm(without, axis=1, keepdims=True)
    results = {
        "machine": machine(),
        "load_before": load(),
        "report": args.report,
        "encoder_version": version,
        "confidence_weight": encoder.config.confidence_weight,
        "with_confidence": summary(z, view),
        "without_confidence": summary(without, view),
    }
    print(json.dumps(results, indent=2))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
