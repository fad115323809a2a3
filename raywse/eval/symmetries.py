"""Randomised symmetries of the evaluated checkpoints: before any embedder sees a zoo model, its hidden neurons are
permuted, and (where the activation allows) positively rescaled and sign-flipped at random — the function is unchanged,
so a method that reads weights must be invariant to score well, and evaluated models no longer share their neuron order
with their parents or their run's other snapshots.

Each model's draw comes from ``(seed, model_id)`` (:func:`symmetry_seed`), so an evaluation is reproducible and the
seed is recorded in ``metrics.json``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch_geometric.data import Data

from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import flip_hidden, permute_hidden, rescale_hidden
from raywse.zoo.datasets import zoo_probes

RESCALE_RANGE = (0.5, 2.0)  # log-uniform positive factors per rescalable hidden neuron


def symmetry_seed(seed: int, model_id: str) -> int:
    """The generator seed of ``model_id``'s symmetry draw in an evaluation with ``seed``."""
    return int(hashlib.sha1(f"{seed}|{model_id}".encode()).hexdigest()[:15], 16)


def randomise_symmetries(tensors: Mapping[str, torch.Tensor], spec: ArchSpec, seed: int) -> dict[str, torch.Tensor]:
    """A random hidden-neuron permutation, positive rescale and odd-activation sign flip of one checkpoint (function
    preserved)."""
    generator = torch.Generator().manual_seed(seed)
    permuted = permute_hidden(tensors, spec, generator)
    rescaled = rescale_hidden(permuted, spec, generator, *RESCALE_RANGE)
    return flip_hidden(rescaled, spec, generator)


def randomised_graphs(zoo_dir: str | os.PathLike, rows: list[dict], seed: int) -> list[Data]:
    """The neural graphs of the zoo models ``rows`` (in order), each built from its checkpoint after
    :func:`randomise_symmetries` with :func:`symmetry_seed`, probed on its dataset's train split."""
    graphs = []
    for row in rows:
        tensors, _ = load_checkpoint(Path(zoo_dir) / row["path"])
        spec = ArchSpec.from_json(row["layer_spec"])
        tensors = {k: v.float() for k, v in tensors.items()}
        tensors = randomise_symmetries(tensors, spec, symmetry_seed(seed, row["model_id"]))
        probes = zoo_probes(row["dataset"], row.get("input_norm") or "unit")
        graphs.append(to_neural_graph(tensors, spec, row["model_id"], probes))
    return graphs
