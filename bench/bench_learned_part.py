"""What the trained encoder's learned part adds to its embedding: same-task retrieval by the parts of the embedding.

Usage: ``python bench/bench_learned_part.py --run RUN`` (a main-job output: ``RUN/zoo``, ``RUN/graphs``,
``RUN/train/encoder``) → ``bench/results/learned_part.json``.

raywse's task embedding joins a learned part (the GNN's projection, trained) with a fixed part (a random projection of
the network's softmax responses on its probe set, weight ``fingerprint_weight``). On the learned models of the ``val``
and ``test_seed`` splits (seen tasks, unseen seeds), each split its own database, this scores leave-one-out same-task
precision@10 (:func:`raywse.metrics.self_retrieval`, as training's validation scores it) of the learned part alone,
of the fixed part alone, and of the two joined at several weights — for the trained encoder and for the same
configuration untrained (the ``random_init_gnn`` row's encoder, seed 0). No symmetry randomisation, no confidence
statistics or first-layer moments: a diagnostic of the parts, not a summary metric.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import load, run_argument, save_results
from torch_geometric.data import Batch

from raywse.core.artifacts import RunLayout, read_zoo_manifest
from raywse.data.graphify import load_graphs
from raywse.data.splits import assign_splits
from raywse.metrics import self_retrieval
from raywse.models.checkpoint import load_encoder
from raywse.models.encoder import NeuralGraphEncoder

RESULTS = Path(__file__).resolve().parent / "results" / "learned_part.json"
WEIGHTS = (0.0, 0.5, 0.8, 0.9, 1.0)  # share of the fixed part's squared norm (the encoder's default is 0.8)


def parts(encoder: NeuralGraphEncoder, graphs: list) -> tuple[np.ndarray, np.ndarray]:
    """``(learned part, fixed part)`` of every graph, each L2-normalised."""
    learned, fixed = [], []
    encoder.eval()
    with torch.no_grad():
        for i in range(0, len(graphs), 64):
            batch = Batch.from_data_list([encoder.prepare(g) for g in graphs[i : i + 64]])
            rep, responses = encoder.representation(batch)
            learned.append(F.normalize(encoder.project(rep), dim=-1))
            fixed.append(encoder.fingerprint(responses, list(batch.probe_source)))
    return torch.cat(learned).numpy(), torch.cat(fixed).numpy()


def main() -> None:
    run_dir = run_argument(__doc__)
    load_before = load()
    run = RunLayout(run_dir)
    rows = read_zoo_manifest(run.zoo)
    split, by_id = assign_splits(rows), {r["model_id"]: r for r in rows}
    graphs = [
        g for g in load_graphs(run.graphs) if split[g.model_id] in ("val", "test_seed") and by_id[g.model_id]["learned"]
    ]
    task = np.array([by_id[g.model_id]["task"] for g in graphs])
    splits = np.array([split[g.model_id] for g in graphs])
    trained, version = load_encoder(run.encoder)
    torch.manual_seed(0)
    untrained = NeuralGraphEncoder(trained.config)
    results: dict = {"encoder_version": version, "models": {s: int((splits == s).sum()) for s in ("val", "test_seed")}}
    for name, encoder in (("trained", trained), ("untrained", untrained)):
        learned, fixed = parts(encoder, graphs)
        for w in WEIGHTS:
            joined = np.concatenate([math.sqrt(1 - w) * learned, math.sqrt(w) * fixed], axis=1)
            results[f"{name}_fixed_share_{w}"] = {
                s: round(self_retrieval(joined[splits == s], task[splits == s], ks=(10,))["precision@10"], 3)
                for s in ("val", "test_seed")
            }
            print(name, w, results[f"{name}_fixed_share_{w}"], flush=True)
    save_results(RESULTS, results, load_before, run=str(run_dir))


if __name__ == "__main__":
    main()
