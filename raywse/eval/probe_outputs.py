"""``probe_outputs``: the training-free functional reference row. Each network runs on a fixed probe set drawn from
the *train* split of its dataset (:func:`raywse.zoo.datasets.probe_inputs`, under the model's recorded input
normalisation); its softmax outputs, padded to the largest class count, are its embedding. Models of different
datasets see different probes, so their vectors live in disjoint coordinate blocks (cosine 0). A checkpoint outside
the zoo (a foreign one) gets the softmax of its graph's output responses where its probes are a zoo dataset's rows
(given by the user, or inferred: :mod:`raywse.graph.probe_inference`), and a zero vector where they are not.
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
from raywse.graph.probes import ZOO_ROWS_PREFIX, probe_rows
from raywse.graph.schema import NodeKind
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
            dataset, logits = self._outputs(g)
            if dataset not in self.blocks:
                continue
            probs = torch.softmax(logits, -1)[:, : self.max_classes]
            start = self.blocks[dataset] * width
            padded = torch.zeros(len(probs), self.max_classes)
            padded[:, : probs.shape[1]] = probs
            out[i, start : start + padded.numel()] = padded.reshape(-1).numpy()
        return out

    def _outputs(self, graph: Data) -> tuple[str, torch.Tensor]:
        """``(dataset, [P, C] logits)``: a zoo model run on its dataset's probes; another network's output responses,
        with the dataset whose probe rows it was probed on (``""`` when they are not a zoo dataset's)."""
        row = self.rows.get(graph.model_id)
        if row is None:  # comparable when probed on a dataset's zoo rows, the same number as below
            rows = probe_rows(graph.probe_source)
            zoo_rows = rows.startswith(ZOO_ROWS_PREFIX) and graph.probe_act.shape[1] == self.num_probes
            return rows[len(ZOO_ROWS_PREFIX) :] if zoo_rows else "", graph.probe_act[
                graph.node_kind == NodeKind.OUTPUT
            ].T
        tensors, _ = load_checkpoint(self.zoo_dir / row["path"])
        spec = ArchSpec.from_json(row["layer_spec"])
        x = probe_inputs(row["dataset"], row.get("input_norm") or "unit", self.num_probes)
        return row["dataset"], forward(spec, tensors, x.view(-1, *spec.input_shape))
