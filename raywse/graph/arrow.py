"""Neural graphs as Arrow rows (one row per graph, plain numeric lists, no pickle); round trips are exact.

``edge_index`` is stored flat as sources then targets, ``edge_attr`` flat row-major ``[E, kernel_h * kernel_w]``,
``probe_act`` flat row-major ``[N, num_probes]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch_geometric.data import Data

from raywse.core.spec import SpecError
from raywse.graph.schema import NODE_COLUMNS

GRAPH_SCHEMA = pa.schema(
    [
        ("model_id", pa.string()),
        ("num_nodes", pa.int64()),
        ("x", pa.list_(pa.float32())),
        ("act_slope", pa.list_(pa.float32())),
        *[(name, pa.list_(pa.int64())) for name in NODE_COLUMNS],
        ("edge_index", pa.list_(pa.int64())),
        ("edge_attr", pa.list_(pa.float32())),
        ("kernel_h", pa.int64()),
        ("kernel_w", pa.int64()),
        ("probe_act", pa.list_(pa.float32())),
        ("num_probes", pa.int64()),
        ("probe_source", pa.string()),
    ]
)


#: How graph tables are written to Parquet: only the strings are dictionary-encoded (weights, responses and edge lists
#: hardly repeat, and trying dictionaries on them made writing ~3× slower and the files larger: bench/README.md).
PARQUET_OPTIONS = {"use_dictionary": ["model_id", "probe_source"]}


def _columns(data: Data) -> dict[str, np.ndarray | int | str]:
    """A graph's row values as numpy arrays / scalars."""
    kh, kw = data.kernel_shape
    return {
        "model_id": str(data.model_id),
        "num_nodes": int(data.num_nodes),
        "x": data.x.detach().reshape(-1).numpy().astype(np.float32),
        "act_slope": data.act_slope.detach().numpy().astype(np.float32),
        **{name: data[name].numpy().astype(np.int64) for name in NODE_COLUMNS},
        "edge_index": data.edge_index.reshape(-1).numpy().astype(np.int64),
        "edge_attr": data.edge_attr.detach().reshape(-1).numpy().astype(np.float32),
        "kernel_h": int(kh),
        "kernel_w": int(kw),
        "probe_act": data.probe_act.detach().reshape(-1).numpy().astype(np.float32),
        "num_probes": int(data.probe_act.shape[1]),
        "probe_source": str(data.probe_source),
    }


def graph_to_row(data: Data) -> dict:
    """One Arrow-ready row (python scalars and lists) for a neural graph."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in _columns(data).items()}


def row_to_graph(row: Mapping) -> Data:
    """Rebuild a neural graph from a row (lists or numpy arrays, as Ray Data hands them over)."""
    missing = [field.name for field in GRAPH_SCHEMA if field.name not in row]
    if missing:
        raise SpecError(f"graph row without {', '.join(missing)}: written by an older raywse, graphify it again")
    n, kh, kw = int(row["num_nodes"]), int(row["kernel_h"]), int(row["kernel_w"])

    def ints(name: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(row[name], dtype=np.int64).copy())

    x = torch.from_numpy(np.asarray(row["x"], dtype=np.float32).copy())
    act_slope = torch.from_numpy(np.asarray(row["act_slope"], dtype=np.float32).copy())
    edge_index = ints("edge_index")
    edge_attr = torch.from_numpy(np.asarray(row["edge_attr"], dtype=np.float32).copy())
    probe_act = torch.from_numpy(np.asarray(row["probe_act"], dtype=np.float32).copy())
    bad_probes = len(probe_act) != n * int(row["num_probes"])
    bad_nodes = len(x) != n or len(act_slope) != n
    if bad_nodes or len(edge_index) % 2 or len(edge_attr) != len(edge_index) // 2 * kh * kw or bad_probes:
        raise SpecError(f"malformed graph row for {row.get('model_id')!r}: column lengths do not match")
    return Data(
        x=x.reshape(n, 1),
        act_slope=act_slope,
        **{name: ints(name) for name in NODE_COLUMNS},
        edge_index=edge_index.reshape(2, -1),
        edge_attr=edge_attr.reshape(-1, kh * kw),
        probe_act=probe_act.reshape(n, int(row["num_probes"])),
        kernel_shape=(kh, kw),
        model_id=str(row["model_id"]),
        probe_source=str(row["probe_source"]),
    )


def _list_array(arrays: list[np.ndarray], value_type: pa.DataType) -> pa.ListArray:
    """A list column from per-row numpy arrays without going through python objects."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays) if arrays else np.zeros(0)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


def graphs_to_table(graphs: Sequence[Data]) -> pa.Table:
    """A table with :data:`GRAPH_SCHEMA`, one row per graph."""
    rows = [_columns(g) for g in graphs]
    columns = []
    for field in GRAPH_SCHEMA:
        values = [r[field.name] for r in rows]
        if pa.types.is_list(field.type):
            columns.append(_list_array(values, field.type.value_type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=GRAPH_SCHEMA)


def table_to_graphs(table: pa.Table) -> list[Data]:
    """Inverse of :func:`graphs_to_table` (extra columns are ignored)."""
    missing = [field.name for field in GRAPH_SCHEMA if field.name not in table.column_names]
    if missing:
        raise SpecError(f"graph table without {', '.join(missing)}: written by an older raywse, graphify it again")
    columns = {}
    for field in GRAPH_SCHEMA:
        column = table.column(field.name).combine_chunks()
        if pa.types.is_list(field.type):
            offsets = column.offsets.to_numpy()
            values = column.values.to_numpy(zero_copy_only=False)
            columns[field.name] = [values[offsets[i] : offsets[i + 1]] for i in range(len(column))]
        else:
            columns[field.name] = column.to_pylist()
    return [row_to_graph({name: col[i] for name, col in columns.items()}) for i in range(table.num_rows)]
