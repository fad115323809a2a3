"""Arrow form of neural graphs: exact round trips through rows, tables and parquet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from graph_nets import trained

from raywse.core.spec import SpecError
from raywse.graph.arrow import GRAPH_SCHEMA, graph_to_row, graphs_to_table, row_to_graph, table_to_graphs
from raywse.graph.neural_graph import to_neural_graph


def _graphs() -> list:
    graphs = []
    for i, arch in enumerate(["mlp", "cnn_gap", "cnn_flat", "cnn_bn"]):
        spec, tensors = trained(arch, "relu", steps=0)
        graphs.append(to_neural_graph(tensors, spec, model_id=f"m{i}-{arch}"))
    return graphs


def _assert_same(a, b) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for key, value in a:  # Data iterates (key, value) pairs
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key] and type(value) is type(b[key]), key


def test_row_round_trip_is_exact():
    for g in _graphs():
        row = graph_to_row(g)
        assert set(row) == set(GRAPH_SCHEMA.names)
        assert row["num_nodes"] == g.num_nodes and (row["kernel_h"], row["kernel_w"]) == g.kernel_shape
        assert row["edge_index"][: g.num_edges] == g.edge_index[0].tolist()  # sources then targets
        _assert_same(row_to_graph(row), g)
        numpy_row = {k: np.asarray(v) if isinstance(v, list) else v for k, v in row.items()}  # as Ray Data hands it
        _assert_same(row_to_graph(numpy_row), g)


def test_table_and_parquet_round_trip_is_exact(tmp_path):
    graphs = _graphs()
    table = graphs_to_table(graphs)
    assert table.schema == GRAPH_SCHEMA and table.num_rows == len(graphs)
    assert pa.Table.from_pylist([graph_to_row(g) for g in graphs], schema=GRAPH_SCHEMA).equals(table)
    pq.write_table(table, tmp_path / "shard.parquet")
    back = table_to_graphs(pq.read_table(tmp_path / "shard.parquet"))
    for a, b in zip(graphs, back, strict=True):
        _assert_same(a, b)
    assert graphs_to_table([]).num_rows == 0


def test_malformed_row_is_refused():
    row = graph_to_row(_graphs()[0])
    row["edge_attr"] = row["edge_attr"][:-1]
    with pytest.raises(SpecError, match="malformed graph row"):
        row_to_graph(row)
