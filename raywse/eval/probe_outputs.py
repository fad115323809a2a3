"""``probe_outputs``: the training-free functional reference row. Each network runs on a fixed probe set drawn from
the *train* split of its dataset (:func:`raywse.zoo.datasets.probe_inputs`, under the model's recorded input
normalisation); its softmax outputs, padded to the largest class count, are its embedding. Models of different
datasets see different probes, so their vectors live in disjoint coordinate blocks (cosine 0).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch_geometric.data import Data

from raywse.core.forward import forward
from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.zoo.datasets import list_datasets, probe_inputs


class ProbeOutputsEmbedder:
    """Softmax outputs of each zoo checkpoint on its dataset's probe set (``rows``: the zoo manifest rows).

    Args:
        zoo_dir: the zoo directory (checkpoint paths in ``rows`` are relative to it).
        rows: manifest rows; a model's ``dataset`` and ``input_norm`` pick its probe set.
        num_probes: probe inputs per dataset.
        max_classes: outputs per probe kept (padded with zeros).
    """

    name = "probe_outputs"
    #: Foreign checkpoints carry no layer spec, so their activations (and function) are unknown: not embedded.
    embeds_foreign = False

    def __init__(self, zoo_dir: str | os.PathLike, rows: list[dict], num_probes: int = 64, max_classes: int = 10):
        self.zoo_dir, self.num_probes, self.max_classes = Path(zoo_dir), num_probes, max_classes
        self.rows = {r["model_id"]: r for r in rows}
        self.blocks = {name: i for i, name in enumerate(list_datasets())}

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> ProbeOutputsEmbedder:
        return self

    @torch.no_grad()
    def embed(self, graphs: list[Data]) -> np.ndarray:
        width = self.num_probes * self.max_classes
        out = np.zeros((len(graphs), width * len(self.blocks)), dtype=np.float32)
        for i, g in enumerate(graphs):
            row = self.rows[g.model_id]
            tensors, _ = load_checkpoint(self.zoo_dir / row["path"])
            spec = ArchSpec.from_json(row["layer_spec"])
            x = probe_inputs(row["dataset"], row.get("input_norm") or "unit", self.num_probes)
            probs = torch.softmax(forward(spec, tensors, x.view(-1, *spec.input_shape)), -1)[:, : self.max_classes]
            start = self.blocks[row["dataset"]] * width
            padded = torch.zeros(len(x), self.max_classes)
            padded[:, : probs.shape[1]] = probs
            out[i, start : start + padded.numel()] = padded.reshape(-1).numpy()
        return out
