"""The one loop that embeds a list of neural graphs with an encoder (validation, tuning, evaluation, the index's
embed actors and search all call :func:`encode`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import Batch, Data

from raywse.models.encoder import NeuralGraphEncoder


@dataclass
class Encoded:
    """Embeddings ``[n, output_dim]`` float32, and the predicted accuracies ``[n]`` when the encoder has a head."""

    embeddings: np.ndarray
    accuracy: np.ndarray | None


@torch.no_grad()
def encode(
    encoder: NeuralGraphEncoder, graphs: list[Data], batch_size: int = 64, device: str | torch.device | None = None
) -> Encoded:
    """Embed ``graphs`` in batches (eval mode, no gradients); ``device`` defaults to the encoder's.

    Raises :class:`~raywse.core.spec.SpecError` for a graph the encoder cannot take (kernels too large).
    """
    encoder.eval()
    device = device or next(encoder.parameters()).device
    prepared = [encoder.prepare(g) for g in graphs]
    head = encoder.accuracy is not None
    vectors, accuracy = [], []
    for start in range(0, len(prepared), batch_size):
        batch = Batch.from_data_list(prepared[start : start + batch_size]).to(device)
        if head:
            z, acc = encoder.embed_and_predict(batch)
            accuracy.append(acc.float().cpu())
        else:
            z = encoder(batch)
        vectors.append(z.float().cpu())
    if not vectors:
        return Encoded(np.zeros((0, encoder.output_dim), np.float32), np.zeros(0, np.float32) if head else None)
    return Encoded(torch.cat(vectors).numpy(), torch.cat(accuracy).numpy() if head else None)
