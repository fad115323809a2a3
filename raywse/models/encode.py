"""The one loop that embeds a list of neural graphs with an encoder (validation, tuning, evaluation, the index's
embed actors and search all call :func:`encode`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from raywse.graph.kernels import kernel_shape_batches, kernel_shape_of
from raywse.models.encoder import NeuralGraphEncoder


@dataclass
class Encoded:
    """Embeddings ``[n, output_dim]`` float32 (query form), the predicted accuracies ``[n]`` when the encoder has a
    head, and when asked for the embeddings as an index stores them
    (:meth:`~raywse.models.encoder.NeuralGraphEncoder.database_form`) and the lineage queries
    (:meth:`~raywse.models.encoder.NeuralGraphEncoder.kinship_form`)."""

    embeddings: np.ndarray
    accuracy: np.ndarray | None
    database: np.ndarray | None = None
    kinship: np.ndarray | None = None


@torch.no_grad()
def encode(
    encoder: NeuralGraphEncoder,
    graphs: list[Data],
    batch_size: int = 64,
    device: str | torch.device | None = None,
    database: bool = False,
    kinship: bool = False,
) -> Encoded:
    """Embed ``graphs`` in batches of one kernel shape each (eval mode, no gradients; kernels are never padded);
    ``device`` defaults to the encoder's; ``database``, ``kinship``: also their database form, their lineage
    queries. Raises :class:`~raywse.core.spec.SpecError` for a graph the encoder cannot take (kernels too large)."""
    encoder.eval()
    device = device or next(encoder.parameters()).device
    for graph in graphs:  # every graph's kernels fit the encoder, checked before any work
        encoder.kernel_slots(kernel_shape_of(graph), graph.model_id)
    head = encoder.accuracy is not None
    vectors = torch.zeros(len(graphs), encoder.output_dim)
    accuracy = torch.zeros(len(graphs))
    stored = torch.zeros_like(vectors) if database else None
    kin = torch.zeros_like(vectors) if kinship else None
    for rows in kernel_shape_batches(graphs, batch_size):
        batch = Batch.from_data_list([graphs[i] for i in rows]).to(device)
        if head:
            z, acc = encoder.embed_and_predict(batch)
            accuracy[rows] = acc.float().cpu()
        else:
            z = encoder(batch)
        vectors[rows] = z.float().cpu()
        lineage = None
        if kin is not None:  # computed once: the database form carries it too
            lineage = encoder.kinship_form(batch)
            kin[rows] = lineage.cpu()
        if stored is not None:
            stored[rows] = encoder.database_form(batch, z, lineage).float().cpu()
    return Encoded(
        vectors.numpy(),
        accuracy.numpy() if head else None,
        None if stored is None else stored.numpy(),
        None if kin is None else kin.numpy(),
    )
