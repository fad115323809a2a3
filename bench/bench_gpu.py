"""GPU paths of the encoder, measured in one run: training-step and embedding throughput (graphs/s) on CUDA vs the
CPU (the main job's encoder, by blocks and by the PyG reference, and a larger one), the contrastive loop for one
epoch of the main job's encoder on CUDA, and one DDP step over NCCL (world size 1).

Needs only torch + torch-geometric (no Ray: the GPU image may not have it), and a graphify output:

    python bench/bench_gpu.py --graphs runs/demo/graphs --zoo runs/demo/zoo --out bench/results/gpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
from torch_geometric.data import Batch

from raywse.core.artifacts import GraphFiles
from raywse.data.labels import ZooLabels
from raywse.graph.arrow import table_to_graphs
from raywse.models.contrastive import ContrastiveConfig, ContrastiveLoop, EmbedAndPredict, LabelledGraphs
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

#: The encoders measured: the main job's (``EncoderConfig()``, message passing by blocks), the same with the PyG
#: edge-list reference, and a larger one.
ENCODERS = {
    "default": {},
    "reference": {"dense_blocks": False},
    "large": {"depth": 4, "hidden": 64, "edge_hidden": 16, "fourier_features": 4, "embed_dim": 64},
}


def load(graphs_dir: Path, zoo_dir: Path) -> LabelledGraphs:
    """Every graph of a graphify output (shard order; read directly, as ``raywse.data.graphify`` imports Ray),
    labelled with its model's task and accuracy from the zoo."""
    graphs = []
    for shard in sorted((graphs_dir / GraphFiles.SHARDS).glob(GraphFiles.SHARD_GLOB)):
        graphs.extend(table_to_graphs(pq.read_table(shard)))
    return ZooLabels.from_zoo(zoo_dir).label(graphs)


def prepared(encoder: NeuralGraphEncoder, data: LabelledGraphs, n: int | None = None) -> LabelledGraphs:
    """The first ``n`` (default all) graphs of ``data``, prepared for ``encoder`` (what ``ContrastiveLoop`` takes)."""
    n = len(data) if n is None else n
    return LabelledGraphs([encoder.prepare(g) for g in data.graphs[:n]], data.task[:n], data.accuracy[:n])


def throughput(encoder, graphs, device, batch_graphs: int, train: bool, repeats: int = 5) -> float:
    """Graphs per second of forward (+ backward when ``train``) on batches of ``batch_graphs`` graphs."""
    batch = Batch.from_data_list([encoder.prepare(g) for g in graphs[:batch_graphs]]).to(device)
    model = EmbedAndPredict(encoder).to(device).train(train)

    def step():
        with torch.set_grad_enabled(train):
            z, acc = model(batch)
            if train:
                (z.sum() + acc.sum()).backward()

    step()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch_graphs * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=Path, required=True)
    parser.add_argument("--zoo", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = load(args.graphs, args.zoo)
    graphs = data.graphs
    gpu = torch.device("cuda")
    results: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
        "graphs": len(graphs),
        "encoders": ENCODERS,
    }
    for encoder_name, overrides in ENCODERS.items():
        for name, device in (("cuda", gpu), ("cpu", torch.device("cpu"))):
            encoder = NeuralGraphEncoder(EncoderConfig(**overrides))
            for batch_graphs in (64, 256) if name == "cpu" else (64, 256, 1024):
                for train in (True, False):
                    key = f"{encoder_name}_{name}_{'train' if train else 'embed'}_graphs_per_s@{batch_graphs}"
                    results[key] = round(throughput(encoder.to(device), graphs, device, batch_graphs, train), 1)
                    print(key, results[key], flush=True)

    # The contrastive loop for one epoch on CUDA (what a GPU Ray Train worker runs), then one DDP step over NCCL.
    encoder = NeuralGraphEncoder(EncoderConfig()).to(gpu)
    opt = torch.optim.AdamW(encoder.parameters(), lr=1e-3)
    config = ContrastiveConfig(batch_tasks=16, models_per_task=8, temperature=0.1, accuracy_weight=0.5, seed=0)
    model = EmbedAndPredict(encoder).train()
    loop = ContrastiveLoop(config, prepared(encoder, data), lambda views: model(views.to(gpu)),
                           opt, gpu)  # fmt: skip
    start = time.perf_counter()
    epoch = loop.train_epoch(0)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    results["cuda_epoch"] = epoch | {"seconds": round(seconds, 2), "pairs": loop.steps_per_epoch * 128}
    results["cuda_epoch_graphs_per_s"] = round(loop.steps_per_epoch * 256 / seconds, 1)
    print("cuda epoch", results["cuda_epoch"], flush=True)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    ddp = torch.nn.parallel.DistributedDataParallel(EmbedAndPredict(encoder), device_ids=[0]).train()
    loop = ContrastiveLoop(config, prepared(encoder, data, 256), lambda views: ddp(views.to(gpu)),
                           opt, gpu)  # fmt: skip
    results["nccl_ddp_step"] = loop.train_epoch(1) | {"backend": dist.get_backend()}
    dist.destroy_process_group()
    print("nccl ddp", results["nccl_ddp_step"], flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
