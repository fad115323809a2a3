"""The evaluation's randomised symmetries keep every checkpoint's function and change its weights."""

from __future__ import annotations

import torch

from raywse.core.artifacts import read_zoo_manifest
from raywse.core.forward import forward
from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.eval.symmetries import randomise_symmetries, randomised_graphs, symmetry_seed
from raywse.graph.structure import architecture_key
from raywse.zoo.datasets import load_task


def test_randomised_symmetries_preserve_function_on_real_inputs(tiny_zoo):
    rows = read_zoo_manifest(tiny_zoo)
    for row in rows[::3]:
        spec = ArchSpec.from_json(row["layer_spec"])
        tensors = {k: v.float() for k, v in load_checkpoint(tiny_zoo / row["path"])[0].items()}
        moved = randomise_symmetries(tensors, spec, symmetry_seed(0, row["model_id"]))
        assert any(not torch.equal(tensors[k], moved[k]) for k in tensors), row["model_id"]
        x = load_task(row["task"], row["input_norm"]).x_test.reshape(-1, *spec.input_shape)
        with torch.no_grad():
            torch.testing.assert_close(forward(spec, moved, x), forward(spec, tensors, x), atol=1e-5, rtol=1e-5)


def test_draws_are_per_model_and_reproducible(tiny_zoo):
    rows = read_zoo_manifest(tiny_zoo)[:6]
    assert len({symmetry_seed(0, r["model_id"]) for r in rows}) == len(rows)
    assert symmetry_seed(0, rows[0]["model_id"]) != symmetry_seed(1, rows[0]["model_id"])
    a, b = randomised_graphs(tiny_zoo, rows, 0), randomised_graphs(tiny_zoo, rows, 0)
    for ga, gb, row in zip(a, b, rows, strict=True):
        assert ga.model_id == row["model_id"] and torch.equal(ga.edge_attr, gb.edge_attr)
    c = randomised_graphs(tiny_zoo, rows, 1)
    assert any(not torch.equal(ga.edge_attr, gc.edge_attr) for ga, gc in zip(a, c, strict=True))
    assert [architecture_key(g) for g in a] == [architecture_key(g) for g in c]
