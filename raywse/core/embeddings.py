"""Embedding tables: the one Parquet schema for vectors that the index and the evaluation both write and read."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raywse.core.io import write_parquet_atomic

#: ``model_id``, ``vector`` (list<float32>) and the ``encoder_version`` (or embedder name) that made it.
EMBEDDINGS_SCHEMA = pa.schema(
    [("model_id", pa.string()), ("vector", pa.list_(pa.float32())), ("encoder_version", pa.string())]
)


def embeddings_table(ids: list[str], vectors: np.ndarray, version: str) -> pa.Table:
    """A table with :data:`EMBEDDINGS_SCHEMA` from ids and a ``[n, d]`` array."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"{len(ids)} ids for vectors of shape {vectors.shape}")
    offsets = pa.array(np.arange(len(ids) + 1, dtype=np.int32) * vectors.shape[1])
    column = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1), pa.float32()))
    return pa.table(
        {"model_id": pa.array(ids, pa.string()), "vector": column, "encoder_version": [version] * len(ids)},
        schema=EMBEDDINGS_SCHEMA,
    )


def table_vectors(table: pa.Table) -> np.ndarray:
    """The ``vector`` column as a ``[n, d]`` float32 array."""
    column = table.column("vector").combine_chunks()
    if not len(column):
        return np.zeros((0, 0), np.float32)
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), -1)


def write_embeddings(table: pa.Table, path: str | os.PathLike) -> None:
    """Write an embeddings table atomically (extra columns dropped)."""
    write_parquet_atomic(table.select(EMBEDDINGS_SCHEMA.names).cast(EMBEDDINGS_SCHEMA), path)


def read_embeddings(path: str | os.PathLike) -> pa.Table:
    """Read an embeddings table (an empty one when ``path`` does not exist)."""
    return pq.read_table(path).cast(EMBEDDINGS_SCHEMA) if os.path.exists(path) else EMBEDDINGS_SCHEMA.empty_table()
