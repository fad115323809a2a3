"""Encoder benchmark, one run: message passing by weight-tensor blocks vs the PyG edge-list reference.

Usage: ``python bench/bench_encoder.py --graphs DIR [--graphs-count 640] [--rounds 3]``
→ ``bench/results/encoder.json``.

Both encoders are ``EncoderConfig()`` (the training defaults) with the same weights, differing only in
``dense_blocks``; they compute the same embeddings (``tests/models/test_blocks.py``). On ``--graphs-count`` graphs of
a graphify output (shuffled, seed 0):

* training: steps of 64 graphs (the contrastive step's 8 tasks x 4 models x 2 views; here two training views of 32
  models, made before timing), forward + backward + AdamW; graphs/s;
* embedding: ``no_grad`` forward over batches of 64; graphs/s.

The two forms alternate within each round (``--rounds`` rounds; the median round is reported), at 1 and 2 torch
threads, so load changes hit both alike. Records the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import datetime
from pathlib import Path

import torch
from _machine import load, machine
from torch_geometric.data import Batch

from raywse.data.graphify import load_graphs
from raywse.graph.transforms import contrastive_view
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

RESULTS = Path(__file__).resolve().parent / "results" / "encoder.json"


def _train_rate(encoder: NeuralGraphEncoder, steps: list[Batch]) -> float:
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    start = time.perf_counter()
    for batch in steps:
        loss = encoder(batch).square().sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return sum(b.num_graphs for b in steps) / (time.perf_counter() - start)


def _embed_rate(encoder: NeuralGraphEncoder, batches: list[Batch]) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        for batch in batches:
            encoder(batch)
    return sum(b.num_graphs for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--graphs", required=True, help="a graphify output directory")
    parser.add_argument("--graphs-count", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load_before = load()
    graphs = load_graphs(args.graphs)
    random.Random(0).shuffle(graphs)
    graphs = graphs[: args.graphs_count]
    blocks = NeuralGraphEncoder(EncoderConfig())
    reference = NeuralGraphEncoder(EncoderConfig(dense_blocks=False))
    reference.load_state_dict(blocks.state_dict())
    prepared = [blocks.prepare(g) for g in graphs]
    view, gen = contrastive_view(noise=0.02, edge_drop=0.05), torch.Generator().manual_seed(0)
    steps = [
        Batch.from_data_list([view(g, gen) for g in prepared[i : i + 32] for _ in range(2)])
        for i in range(0, len(prepared) - 31, 32)
    ]
    embed = [Batch.from_data_list(prepared[i : i + 64]) for i in range(0, len(prepared), 64)]
    edges = sum(g.edge_index.shape[1] for g in graphs) / len(graphs)
    results: dict = {"threads": {}}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rates: dict[str, list[float]] = {k: [] for k in ("train_blocks", "train_reference", "embed_blocks",
                                                         "embed_reference")}  # fmt: skip
        for _ in range(args.rounds):
            rates["train_blocks"].append(_train_rate(blocks, steps))
            rates["train_reference"].append(_train_rate(reference, steps))
            rates["embed_blocks"].append(_embed_rate(blocks.eval(), embed))
            rates["embed_reference"].append(_embed_rate(reference.eval(), embed))
            blocks.train()
            reference.train()
        median = {k: round(statistics.median(v), 1) for k, v in rates.items()}
        median["train_ratio"] = round(median["train_blocks"] / median["train_reference"], 2)
        median["embed_ratio"] = round(median["embed_blocks"] / median["embed_reference"], 2)
        results["threads"][threads] = median | {"rounds": rates}
        print(f"{threads} thread(s): {json.dumps(median)}", flush=True)
    results |= {
        "graphs": len(graphs),
        "mean_edges_per_graph": round(edges, 1),
        "graphs_dir": str(args.graphs),
        "encoder_config": EncoderConfig().__dict__,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load(),
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
