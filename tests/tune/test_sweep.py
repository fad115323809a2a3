"""A real (small) Ray Tune ASHA sweep on the tiny zoo, and the best config feeding back into training."""

from __future__ import annotations

import json
import math

import pytest

import raywse.tune.sweep as sweep_mod
from raywse.config import apply_json_overrides
from raywse.train.trainer import TrainConfig
from raywse.tune.sweep import OBJECTIVE, TuneConfig, run_sweep

SWEEP = TuneConfig(num_samples=3, max_epochs=2, grace_period=1, depths=(1, 2), hiddens=(16,))


def _in_ranges(config: dict) -> bool:
    return (
        SWEEP.temperature_min <= config["temperature"] <= SWEEP.temperature_max
        and config["depth"] in SWEEP.depths
        and config["hidden"] in SWEEP.hiddens
        and SWEEP.lr_min <= config["lr"] <= SWEEP.lr_max
    )


def test_sweep_writes_best_config_that_training_reads(tiny_zoo, tiny_graphs, tmp_path):
    # one CPU per trial (the TuneConfig default): two trials share the 2-core local Ray at a time
    summary = run_sweep(tiny_zoo, tiny_graphs, tmp_path, SWEEP, base=TrainConfig(batch_size=16, embed_dim=16))

    path = tmp_path / "best_config.json"
    assert path.exists()
    written = json.loads(path.read_text())
    assert written == json.loads(json.dumps(summary))
    best = written["best"]
    assert set(best) == {"temperature", "depth", "hidden", "lr"} and _in_ranges(best)
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
    assert (config.temperature, config.depth, config.hidden, config.lr) == (
        best["temperature"],
        best["depth"],
        best["hidden"],
        best["lr"],
    )
    assert config.batch_size == TrainConfig().batch_size  # only the swept fields are overridden


def test_sweep_refuses_zoo_without_usable_validation(tiny_zoo, tiny_graphs, tmp_path, monkeypatch):
    labels, splits = sweep_mod.zoo_labels(tiny_zoo)
    val = next(m for m, s in splits.items() if s == "val")
    # the one val model's task has no other train/val model: the objective would be undefined for every trial
    lonely = {m: ("test_seed" if labels[m][0] == labels[val][0] and m != val else s) for m, s in splits.items()}
    lonely = {m: ("test_seed" if s == "val" and m != val else s) for m, s in lonely.items()}
    monkeypatch.setattr(sweep_mod, "zoo_labels", lambda _: (labels, lonely))
    with pytest.raises(ValueError, match="none of its 1 val models shares a task"):
        run_sweep(tiny_zoo, tiny_graphs, tmp_path, SWEEP)
    assert not (tmp_path / "best_config.json").exists()
