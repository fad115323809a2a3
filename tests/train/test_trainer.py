"""Ray Train DDP (2 CPU workers, gloo) on the real tiny zoo: trains, checkpoints, exports, resumes."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace

import pytest

import raywse.train.trainer as trainer_mod
from raywse.core.artifacts import EncoderFiles
from raywse.core.config import ConfigError
from raywse.models.checkpoint import load_encoder
from raywse.models.contrastive import ContrastiveConfig
from raywse.models.encoder import EncoderConfig
from raywse.train.trainer import TrainConfig, place_workers, saved_train_config, train_as, train_encoder

SMALL = TrainConfig(
    epochs=2,
    contrastive=ContrastiveConfig(batch_tasks=4, models_per_task=4),
    encoder=EncoderConfig(depth=2, hidden=32, embed_dim=32),
    num_workers=2,
    run_name="t",
)


def test_two_worker_ddp_trains_exports_and_resumes(tiny_zoo, tiny_graphs, tmp_path):
    first = train_encoder(tiny_zoo, tiny_graphs, tmp_path, SMALL)
    assert [m["epoch"] for m in first.metrics] == [0, 1]
    for m in first.metrics:
        assert m["loss"] > 0 and "val_precision@10" in m and "alignment" in m and "uniformity" in m
        assert m["device"] == "cpu"  # where each epoch ran is recorded (cuda on a GPU run)
    encoder, version = load_encoder(first.encoder_dir)
    assert json.loads((first.encoder_dir / EncoderFiles.CONFIG).read_text())["version"] == version
    assert encoder.config.depth == 2

    # Same run name and directory, more epochs: Ray Train resumes from the latest checkpoint (epoch 1).
    # Its history carries epochs 0-1 from the first run unchanged and adds only epoch 2: no restart from scratch.
    started = time.time()
    second = train_encoder(tiny_zoo, tiny_graphs, tmp_path, replace(SMALL, epochs=3))
    assert [m["epoch"] for m in second.metrics] == [0, 1, 2]
    assert second.metrics[:2] == first.metrics
    assert second.metrics[2]["finished_at"] > started
    assert load_encoder(second.encoder_dir)[1] != version
    # What the evaluation trains its baseline with, where it ran settled: no GPU here, so on the CPUs.
    assert saved_train_config(tmp_path) == replace(SMALL, epochs=3, use_gpu=False) == second.config
    assert saved_train_config(tmp_path / "elsewhere") is None


def test_a_gpu_run_the_local_ray_cannot_place_is_refused_not_left_waiting(tiny_zoo, tiny_graphs, tmp_path):
    # This machine has no GPU: Ray Train would wait forever for one; the run stops at once with a one-line fix.
    with pytest.raises(ConfigError, match=r"2 workers need one GPU each, Ray sees 0; leave --train.use-gpu off"):
        train_encoder(tiny_zoo, tiny_graphs, tmp_path, replace(SMALL, use_gpu=True))
    assert not (tmp_path / EncoderFiles.DIR).exists()


@pytest.mark.parametrize(
    ("asked", "gpus", "address", "placed"),
    [
        ((None, 2), 0, "", (False, 2)),  # no GPU: CPU workers as asked
        ((None, 2), 1, "", (True, 1)),  # one GPU: one worker on it
        ((None, 2), 4, "", (True, 2)),  # more GPUs than workers: as many as asked
        ((None, 2), 1, "ray://head:10001", (True, 1)),  # a cluster: the GPUs it has now, never waiting for more
        ((True, 4), 0, "ray://head:10001", (True, 4)),  # asked for: a cluster may add GPU machines
        ((False, 2), 8, "", (False, 2)),  # kept off
    ],
)
def test_where_workers_train_is_settled_before_the_run(monkeypatch, asked, gpus, address, placed):
    monkeypatch.setattr(trainer_mod, "cluster_gpus", lambda: gpus)
    if address:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    config = place_workers(replace(SMALL, use_gpu=asked[0], num_workers=asked[1]))
    assert (config.use_gpu, config.num_workers) == placed


def test_an_explicit_gpu_run_a_local_ray_cannot_place_names_the_fix(monkeypatch):
    monkeypatch.setattr(trainer_mod, "cluster_gpus", lambda: 1)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"2 workers need one GPU each, Ray sees 1; set --train.num-workers 1"):
        place_workers(replace(SMALL, use_gpu=True, num_workers=2))


@pytest.mark.parametrize(("ran_on_gpu", "baseline"), [(True, None), (False, False)])
def test_the_baseline_trained_as_a_gpu_run_takes_the_gpus_of_its_own_machine(
    monkeypatch, tmp_path, ran_on_gpu, baseline
):
    # A run trained on a GPU machine, evaluated on one without: its baseline must not insist on a GPU.
    (tmp_path / EncoderFiles.TRAIN_CONFIG).write_text(json.dumps(asdict(replace(SMALL, use_gpu=ran_on_gpu))))
    seen = []

    def capture(zoo, graphs, out, config):
        seen.append(config)
        raise RuntimeError("captured")

    monkeypatch.setattr(trainer_mod, "train_encoder", capture)
    with pytest.raises(RuntimeError, match="captured"):
        train_as(tmp_path, "zoo", "graphs")(EncoderConfig(depth=1), tmp_path / "baseline")
    assert seen[0].use_gpu is baseline and seen[0].contrastive.permute_views and seen[0].encoder.depth == 1
