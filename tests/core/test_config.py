"""Configs on the command line and in JSON: nested sections, presets as the base, one-line errors."""

from __future__ import annotations

import argparse
import json

import pytest

from raywse.core.config import ConfigError, add_config_args, apply_json_overrides, config_from_args
from raywse.train.trainer import TrainConfig
from raywse.zoo.plan import ZooConfig


def parse(cls: type, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_args(parser, cls)
    return parser.parse_args(argv)


def test_nested_flags_update_only_what_is_given():
    args = parse(TrainConfig, ["--epochs", "3", "--encoder.hidden", "16", "--contrastive.permute-views"])
    config = config_from_args(TrainConfig, args)
    assert (config.epochs, config.encoder.hidden, config.contrastive.permute_views) == (3, 16, True)
    default = TrainConfig()
    assert config.encoder.depth == default.encoder.depth and config.contrastive.lr == default.contrastive.lr


def test_preset_is_the_base_and_flags_override_it():
    config = config_from_args(ZooConfig, parse(ZooConfig, ["--seed", "7"]), base=ZooConfig.tiny())
    assert config == ZooConfig.tiny(seed=7)
    assert config_from_args(ZooConfig, parse(ZooConfig, []), base=ZooConfig.bench()) == ZooConfig.bench()
    with pytest.raises(ValueError, match="unknown zoo preset"):
        ZooConfig.preset("huge")


def test_invalid_values_are_config_errors():
    with pytest.raises(ConfigError, match="edge_dim must be a perfect square"):
        config_from_args(TrainConfig, parse(TrainConfig, ["--encoder.edge-dim", "8"]))
    with pytest.raises(ConfigError, match="lr_range"):
        config_from_args(ZooConfig, parse(ZooConfig, ["--lr-range", "0.1", "0.01"]))


def test_json_overrides_are_nested_and_checked(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"best": {"contrastive": {"temperature": 0.2}, "encoder": {"depth": 2}}}))
    config = apply_json_overrides(TrainConfig(), str(path))
    assert (config.contrastive.temperature, config.encoder.depth) == (0.2, 2)
    assert config.contrastive.lr == TrainConfig().contrastive.lr
    path.write_text(json.dumps({"encoder": {"depht": 2}}))
    with pytest.raises(ConfigError, match="unknown EncoderConfig fields: depht"):
        apply_json_overrides(TrainConfig(), str(path))
    with pytest.raises(FileNotFoundError):
        apply_json_overrides(TrainConfig(), str(tmp_path / "missing.json"))
