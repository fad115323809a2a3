"""Ray Train DDP (2 CPU workers, gloo) on the real tiny zoo: trains, checkpoints, exports, resumes."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import torch

from raywse.data.graphify import load_graphs
from raywse.models.encoder import NeuralGraphEncoder
from raywse.train.loop import ContrastiveLoop, EmbedAndPredict, validate
from raywse.train.trainer import TrainConfig, label_graphs, load_encoder, loop_config, train_encoder, zoo_labels

SMALL = TrainConfig(epochs=2, batch_size=16, depth=2, hidden=32, embed_dim=32, num_workers=2, run_name="t")


def test_two_worker_ddp_trains_exports_and_resumes(tiny_zoo, tiny_graphs, tmp_path):
    first = train_encoder(tiny_zoo, tiny_graphs, tmp_path, SMALL)
    assert [m["epoch"] for m in first.metrics] == [0, 1]
    for m in first.metrics:
        assert m["loss"] > 0 and "val_precision@10" in m and "alignment" in m and "uniformity" in m
    encoder, version = load_encoder(first.encoder_dir)
    assert json.loads((first.encoder_dir / "config.json").read_text())["version"] == version
    assert encoder.config.depth == 2

    # Same run name and directory, more epochs: Ray Train resumes from the latest checkpoint (epoch 1).
    # Its history carries epochs 0-1 from the first run unchanged and adds only epoch 2: no restart from scratch.
    started = time.time()
    second = train_encoder(tiny_zoo, tiny_graphs, tmp_path, replace(SMALL, epochs=3))
    assert [m["epoch"] for m in second.metrics] == [0, 1, 2]
    assert second.metrics[:2] == first.metrics
    assert second.metrics[2]["finished_at"] > started
    assert load_encoder(second.encoder_dir)[1] != version


def test_contrastive_loop_lowers_the_loss(tiny_zoo, tiny_graphs):
    labels, splits = zoo_labels(tiny_zoo)
    graphs = label_graphs(load_graphs(tiny_graphs), labels)
    config = replace(SMALL, epochs=6, same_task_prob=0.0, noise=0.02)
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(config.encoder_config())
    opt = torch.optim.AdamW(encoder.parameters(), lr=3e-3)
    loop = ContrastiveLoop(loop_config(vars(config)), graphs, encoder, EmbedAndPredict(encoder), opt, "cpu")
    losses = [loop.train_epoch(epoch)["loss"] for epoch in range(config.epochs)]
    assert losses[-1] < 0.8 * losses[0], losses
    assert set(validate(encoder, graphs, "cpu")) >= {"val_precision@10", "val_mAP", "val_kendall_tau"}
