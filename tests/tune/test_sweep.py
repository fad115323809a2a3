"""A real (small) Ray Tune ASHA sweep on the tiny zoo, and the best config feeding back into training."""

from __future__ import annotations

import json
import math
from unittest.mock import ANY

import pytest

from raywse.core.artifacts import TuneFiles
from raywse.core.config import apply_json_overrides
from raywse.data.labels import ZooLabels
from raywse.models.contrastive import ContrastiveConfig
from raywse.models.encoder import EncoderConfig
from raywse.train.trainer import TrainConfig
from raywse.tune.sweep import OBJECTIVE, TuneConfig, run_sweep

SWEEP = TuneConfig(num_samples=3, max_epochs=2, grace_period=1, depths=(1, 2), hiddens=(16,))


def _in_ranges(config: dict) -> bool:
    contrastive, encoder = config["contrastive"], config["encoder"]
    return (
        SWEEP.temperature_min <= contrastive["temperature"] <= SWEEP.temperature_max
        and encoder["depth"] in SWEEP.depths
        and encoder["hidden"] in SWEEP.hiddens
        and SWEEP.lr_min <= contrastive["lr"] <= SWEEP.lr_max
    )


def test_sweep_writes_best_config_that_training_reads(tiny_zoo, tiny_graphs, tmp_path):
    # one CPU per trial (the TuneConfig default): two trials share the 2-core local Ray at a time
    summary = run_sweep(
        tiny_zoo,
        tiny_graphs,
        tmp_path,
        SWEEP,
        ContrastiveConfig(batch_tasks=4, models_per_task=4),
        EncoderConfig(embed_dim=16),
    )

    path = tmp_path / TuneFiles.BEST_CONFIG
    assert path.exists()
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(summary))
    best = written["best"]
    assert best == {"contrastive": {"temperature": ANY, "lr": ANY}, "encoder": {"depth": ANY, "hidden": ANY}}
    assert _in_ranges(best)
    assert written["objective"] == OBJECTIVE and math.isfinite(written["best_score"])

    trials = written["trials"]
    assert len(trials) == SWEEP.num_samples
    for trial in trials:
        assert _in_ranges(trial["config"])
        assert 1 <= trial["epochs"] <= SWEEP.max_epochs  # ASHA may stop a trial after its grace period
        assert 0.0 <= trial[OBJECTIVE] <= 1.0
    assert written["best_score"] == max(t[OBJECTIVE] for t in trials)
    assert best in [t["config"] for t in trials]
    assert any((tmp_path / "ray_results" / "sweep").iterdir())

    config = apply_json_overrides(TrainConfig(), str(path))
    assert config.contrastive.temperature == best["contrastive"]["temperature"]
    assert config.contrastive.lr == best["contrastive"]["lr"]
    assert (config.encoder.depth, config.encoder.hidden) == (best["encoder"]["depth"], best["encoder"]["hidden"])
    assert config.contrastive.batch_tasks == TrainConfig().contrastive.batch_tasks  # only the swept fields change


def test_sweep_refuses_zoo_without_usable_validation(tiny_zoo, tiny_graphs, tmp_path, monkeypatch):
    labels = ZooLabels.from_zoo(tiny_zoo)
    val = labels.ids("val")[0]
    # the one val model's task has no other train/val model: the objective would be undefined for every trial
    lonely = {
        m: ("test_seed" if labels.task[m] == labels.task[val] and m != val else s) for m, s in labels.split.items()
    }
    lonely = {m: ("test_seed" if s == "val" and m != val else s) for m, s in lonely.items()}
    patched = ZooLabels(labels.task, labels.accuracy, lonely, labels.learned)
    monkeypatch.setattr(ZooLabels, "from_zoo", classmethod(lambda cls, zoo: patched))
    with pytest.raises(ValueError, match="none of its 1 val models shares a task"):
        run_sweep(tiny_zoo, tiny_graphs, tmp_path, SWEEP)
    assert not (tmp_path / TuneFiles.BEST_CONFIG).exists()
