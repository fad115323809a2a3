"""Export and load a trained encoder: ``encoder.pt`` (state dict) + ``config.json`` (config and content version).

The version is a digest of the weights file, so an index or report can name exactly which encoder made it, and a
half-written export (weights that do not match the recorded version) is refused on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from raywse.core.artifacts import EncoderFiles
from raywse.core.config import ConfigError
from raywse.core.io import atomic_path, write_json_atomic
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

#: Config fields added since the first export, at the value that reproduces an export that predates them.
BEFORE_FIELDS = {"confidence_weight": 0.0, "kinship_dim": 0}


def build_encoder(config: EncoderConfig) -> NeuralGraphEncoder:
    """A fresh encoder of ``config``: raywse's, or the non-equivariant baseline's when ``config.reads_node_order``."""
    if not config.reads_node_order:
        return NeuralGraphEncoder(config)
    # imported only here: the baselines package pulls in sklearn, which `raywse search` must not pay for
    from raywse.models.baselines.nonequivariant import NonEquivariantEncoder

    return NonEquivariantEncoder(config)


def export_encoder(state_dict: dict, config: EncoderConfig, encoder_dir: str | os.PathLike) -> str:
    """Write the encoder (weights, then config + version) atomically; returns the version."""
    encoder_dir = Path(encoder_dir)
    encoder_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(encoder_dir / EncoderFiles.WEIGHTS) as tmp:
        torch.save(state_dict, tmp)
    version = _file_digest(encoder_dir / EncoderFiles.WEIGHTS)
    write_json_atomic({"encoder": asdict(config), "version": version}, encoder_dir / EncoderFiles.CONFIG)
    return version


def has_encoder(encoder_dir: str | os.PathLike) -> bool:
    """Whether ``encoder_dir`` holds a complete export."""
    return (Path(encoder_dir) / EncoderFiles.CONFIG).exists() and (Path(encoder_dir) / EncoderFiles.WEIGHTS).exists()


def load_encoder(encoder_dir: str | os.PathLike) -> tuple[NeuralGraphEncoder, str]:
    """Load an exported encoder in eval mode on the CPU; returns ``(encoder, version)``."""
    encoder_dir = Path(encoder_dir)
    if not has_encoder(encoder_dir):
        raise FileNotFoundError(
            f"no trained encoder in {encoder_dir} (expected {EncoderFiles.CONFIG} and {EncoderFiles.WEIGHTS})"
        )
    meta = json.loads((encoder_dir / EncoderFiles.CONFIG).read_text())
    if _file_digest(encoder_dir / EncoderFiles.WEIGHTS) != meta["version"]:
        raise ValueError(
            f"{encoder_dir}: {EncoderFiles.WEIGHTS} does not match the version in {EncoderFiles.CONFIG} "
            "(a partial export)"
        )
    try:
        encoder = build_encoder(EncoderConfig(**(BEFORE_FIELDS | meta["encoder"])))
        encoder.load_state_dict(torch.load(encoder_dir / EncoderFiles.WEIGHTS, map_location="cpu", weights_only=True))
    except (TypeError, RuntimeError) as exc:  # unknown config keys, or parameters of another architecture
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"{encoder_dir}: exported by another version of raywse's encoder ({first}); retrain: delete its training "
            "run directory (its checkpoints hold the old encoder too) and run the train stage again"
        ) from exc
    return encoder.eval(), meta["version"]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
