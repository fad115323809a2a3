"""``probe_outputs``: the training-free functional reference row. Every network's output responses on its probe set
(stored in its neural graph: each output node's ``probe_act``, the logits on the graph's probes), under a softmax and
padded to the largest class count, are its embedding. A zoo model's probes are drawn from the *train* split of its
dataset (:func:`raywse.zoo.datasets.probe_inputs`, under the model's recorded input normalisation); a checkpoint
outside the zoo (a foreign one) is comparable where its probes are a zoo dataset's rows (given by the user, or
inferred: :mod:`raywse.graph.probe_inference`), and a zero vector where they are not. Models of different datasets
see different probes, so their vectors live in disjoint coordinate blocks (cosine 0).
"""

from __future__ import annotations

import numpy as np
import torch
from torch_geometric.data import Data

from raywse.graph.probes import ZOO_ROWS_PREFIX, probe_rows
from raywse.graph.schema import NodeKind
from raywse.zoo.datasets import list_datasets


class ProbeOutputsEmbedder:
    """Softmax outputs of each network on its probe set, read from its graph's output responses.

    Args:
        num_probes: probe inputs per dataset (a graph probed on another number of rows is not comparable: zeros).
        max_classes: outputs per probe kept (padded with zeros).
    """

    name = "probe_outputs"

    def __init__(self, num_probes: int = 64, max_classes: int = 10):
        self.num_probes, self.max_classes = num_probes, max_classes
        self.blocks = {name: i for i, name in enumerate(list_datasets())}

    def fit(self, graphs: list[Data], labels: np.ndarray | None = None) -> ProbeOutputsEmbedder:
        return self

    @torch.no_grad()
    def embed(self, graphs: list[Data]) -> np.ndarray:
        width = self.num_probes * self.max_classes
        out = np.zeros((len(graphs), width * len(self.blocks)), dtype=np.float32)
        for i, g in enumerate(graphs):
            dataset = self._dataset(g)
            if dataset not in self.blocks:
                continue
            logits = g.probe_act[g.node_kind == NodeKind.OUTPUT].T.float()  # [P, C]
            probs = torch.softmax(logits, -1)[:, : self.max_classes]
            start = self.blocks[dataset] * width
            padded = torch.zeros(len(probs), self.max_classes)
            padded[:, : probs.shape[1]] = probs
            out[i, start : start + padded.numel()] = padded.reshape(-1).numpy()
        return out

    def _dataset(self, graph: Data) -> str:
        """The zoo dataset whose probe rows ``graph`` was probed on (``""`` when they are not one's)."""
        rows = probe_rows(graph.probe_source)
        if rows.startswith(ZOO_ROWS_PREFIX) and graph.probe_act.shape[1] == self.num_probes:
            return rows[len(ZOO_ROWS_PREFIX) :]
        return ""
