"""Lineage re-ranking: two networks' first-layer neurons paired one to one.

The lineage part of an embedding (:mod:`raywse.graph.lineage`) sketches the *set* of a network's first-layer
directions, which networks trained on one task from different initialisations largely share. A fine-tuned child
keeps more: each of its parent's neurons still has a partner near where it was. So a lineage search re-scores its
first :data:`RERANK_DEPTH` answers with :func:`matched_similarity`, which pairs the two first layers' neurons by an
optimal assignment (Hungarian) on ``|u_i · v_j|`` — ``u_i`` a neuron's unit incoming weights and bias, read as the
sketch reads them, input nodes by position — and averages ``exp(−σ²(1 − |u_i · v_j|))`` over the larger set. It is
exactly invariant to permuting, positively rescaling and sign-flipping hidden neurons, as the sketch is, and draws
nothing. The share, kind and depth were chosen on a second zoo (``raywse zoo --preset small --seed 1``), then
measured on the demo's (``bench/bench_lineage_rerank.py``: 0.9455 → 0.9795 lineage mAP there; a hand-run prototype
had scored the same grid on the demo's zoo first, every setting 0.963–0.981).

Shapes:
    a :class:`FirstLayer`'s ``directions``: ``[neurons, width * cells + 1]`` (one column per input node and kernel
    cell, input-major, then the bias), float32, unit rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch_geometric.data import Data

from raywse.core.io import write_parquet_atomic

#: Answers of a lineage search re-scored (the rest keep their order after them).
RERANK_DEPTH = 50
#: The matched similarity's share of a re-scored answer's score (the embedding's cosine has the rest).
RERANK_SHARE = 0.75
#: How sharply a pair of directions counts only when they nearly agree.
MATCH_SIGMA = 3.0
#: A first layer with more neurons or floats than these (e.g. an embedding table) is not kept, so that one pairing
#: stays in milliseconds (the assignment is cubic in the neurons); its network keeps its cosine when re-scored.
MAX_NEURONS = 512
MAX_FLOATS = 1 << 20

FIRST_LAYERS_SCHEMA = pa.schema(
    [("model_id", pa.string()), ("width", pa.int32()), ("cells", pa.int32()), ("directions", pa.binary())]
)


@dataclass(frozen=True)
class FirstLayer:
    """A network's first layer as its input space sees it (the module docstring's shapes)."""

    width: int  # input nodes
    cells: int  # kernel cells per edge
    directions: np.ndarray


def first_layer_of(graph: Data) -> FirstLayer | None:
    """The first layer of a neural graph (``None`` without one reading the inputs, or above :data:`MAX_NEURONS` or
    :data:`MAX_FLOATS`)."""
    layer, (src, dst) = graph.node_layer, graph.edge_index
    neurons = torch.nonzero(layer == 1).view(-1)
    first = (layer[src] == 0) & (layer[dst] == 1)
    width, cells = int((layer == 0).sum()), int(graph.edge_attr.shape[1])
    too_big = len(neurons) > MAX_NEURONS or len(neurons) * (width * cells + 1) > MAX_FLOATS
    if not len(neurons) or not bool(first.any()) or too_big:
        return None
    row = torch.full((len(layer),), -1, dtype=torch.long)
    row[neurons] = torch.arange(len(neurons))
    directions = torch.zeros(len(neurons), width * cells + 1)
    columns = graph.node_pos[src[first]].unsqueeze(1) * cells + torch.arange(cells)
    directions[row[dst[first]].unsqueeze(1).expand(-1, cells), columns] = graph.edge_attr[first].float()
    directions[:, -1] = graph.x.view(-1)[neurons].float()
    return FirstLayer(width, cells, torch.nn.functional.normalize(directions, dim=1).numpy())


def matched_similarity(a: FirstLayer, b: FirstLayer) -> float:
    """In ``[0, 1]``: 1 for the same first layer whatever its hidden symmetries; 0 where the inputs differ."""
    if (a.width, a.cells) != (b.width, b.cells):
        return 0.0
    from scipy.optimize import linear_sum_assignment  # here: the search path must not pay scipy's import otherwise

    cos = np.abs(a.directions @ b.directions.T)
    rows, cols = linear_sum_assignment(cos, maximize=True)
    paired = np.exp(-(MATCH_SIGMA**2) * (1.0 - cos[rows, cols]))
    return float(paired.sum() / max(len(a.directions), len(b.directions)))


def rerank(
    query: FirstLayer | None,
    candidates: Sequence[FirstLayer | None],
    cosines: np.ndarray,
    share: float = RERANK_SHARE,
) -> np.ndarray:
    """The re-scored answers' scores: ``(1 − share) · cosine + share · matched``. An answer whose first layer is not
    known keeps its cosine as its matched part; without the query's, every cosine stands.

    Shapes:
        candidates: ``K`` first layers; cosines: ``[K]``; returns ``[K]``.
    """
    cosines = np.asarray(cosines, dtype=np.float64)
    if query is None:
        return cosines
    matched = np.array(
        [cos if c is None else matched_similarity(query, c) for c, cos in zip(candidates, cosines, strict=True)]
    )
    return (1 - share) * cosines + share * matched


def first_layers_table(ids: Sequence[str], layers: Sequence[FirstLayer | None], keep_missing: bool = False) -> pa.Table:
    """First layers as Arrow rows (:data:`FIRST_LAYERS_SCHEMA`); ids without one are left out, or with
    ``keep_missing`` kept as nulls (one row per id, in order)."""
    kept = [(m, f) for m, f in zip(ids, layers, strict=True) if keep_missing or f is not None]
    return pa.table(
        {
            "model_id": [m for m, _ in kept],
            "width": [None if f is None else f.width for _, f in kept],
            "cells": [None if f is None else f.cells for _, f in kept],
            "directions": [
                None if f is None else np.ascontiguousarray(f.directions, np.float32).tobytes() for _, f in kept
            ],  # fmt: skip
        },
        schema=FIRST_LAYERS_SCHEMA,
    )


def table_first_layers(table: pa.Table) -> dict[str, FirstLayer]:
    """``model_id → FirstLayer`` of :func:`first_layers_table`'s rows."""
    out = {}
    for m, width, cells, raw in zip(*table.select(FIRST_LAYERS_SCHEMA.names).to_pydict().values(), strict=True):
        if raw is None:
            continue
        flat = np.frombuffer(raw, dtype=np.float32)
        out[m] = FirstLayer(width, cells, flat.reshape(-1, width * cells + 1))
    return out


def write_first_layers(table: pa.Table, path: str | os.PathLike) -> None:
    """Write :func:`first_layers_table`'s rows to ``path`` (a temporary file, then renamed)."""
    write_parquet_atomic(table.cast(FIRST_LAYERS_SCHEMA), path)


def read_first_layers(path: str | os.PathLike) -> pa.Table:
    """The first-layer rows saved at ``path`` (an empty table when there is no such file: saved before they were
    kept)."""
    return pq.read_table(path).cast(FIRST_LAYERS_SCHEMA) if os.path.exists(path) else FIRST_LAYERS_SCHEMA.empty_table()
