"""Lineage re-ranking by matching first layers: exact invariance, kin over strangers, the stored form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_nets import trained
from test_lineage import ARCHS, train_on

from raywse.graph.first_layer_match import (
    FirstLayer,
    first_layer_of,
    first_layers_table,
    matched_similarity,
    rerank,
    table_first_layers,
)
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import flip_hidden, permute_hidden, rescale_hidden


def first(spec, tensors: dict[str, torch.Tensor]) -> FirstLayer:
    layer = first_layer_of(to_neural_graph(tensors, spec, "m"))
    assert layer is not None
    return layer


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_matching_ignores_permutation_rescale_and_sign(arch, act):
    spec, tensors = trained(arch, act)
    gen = torch.Generator().manual_seed(5)
    twin = flip_hidden(tensors, spec, gen) if act == "tanh" else rescale_hidden(tensors, spec, gen)
    twin = permute_hidden(twin, spec, gen)
    a, b = first(spec, tensors), first(spec, twin)
    assert not np.allclose(a.directions, b.directions)  # the symmetry did move the first layer's rows
    assert np.allclose(np.linalg.norm(a.directions, axis=1), 1.0, atol=1e-6)
    assert matched_similarity(a, b) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_fine_tuned_child_matches_its_parent_better_than_another_seed(arch):
    spec, parent = trained(arch, "relu")
    child = train_on(spec, parent, shift=1, steps=60, lr=3e-3, seed=1)
    gen = torch.Generator().manual_seed(11)
    fresh = {k: torch.randn(v.shape, generator=gen) * v.std() if "running" not in k else v for k, v in parent.items()}
    other = train_on(spec, fresh, shift=1, steps=50, lr=1e-2, seed=2)  # the child's task, another initialisation
    p, c, o = first(spec, parent), first(spec, child), first(spec, other)
    kin, stranger = matched_similarity(p, c), matched_similarity(p, o)
    print(f"{arch}: matched similarity to the parent: child {kin:.3f}, another seed {stranger:.3f}")
    assert kin > 0.5 and kin > stranger + 0.3


def test_other_inputs_score_zero_and_unknown_first_layers_keep_their_cosine():
    a = FirstLayer(4, 1, np.eye(3, 5, dtype=np.float32))
    b = FirstLayer(2, 2, np.eye(3, 5, dtype=np.float32))
    assert matched_similarity(a, b) == 0.0
    assert matched_similarity(a, a) == pytest.approx(1.0)
    cosines = np.array([0.9, 0.5, 0.4])
    assert np.array_equal(rerank(None, [a, b, None], cosines), cosines)
    scores = rerank(a, [b, None, a], cosines, share=0.75)
    assert scores == pytest.approx([0.25 * 0.9, 0.5, 0.25 * 0.4 + 0.75])
    assert int(np.argmax(scores)) == 2  # the same first layer overtakes a closer cosine


def test_the_stored_form_round_trips_and_leaves_out_or_keeps_missing_rows():
    a = FirstLayer(4, 1, np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32))
    table = first_layers_table(["x", "y"], [a, None])
    assert table.column("model_id").to_pylist() == ["x"]
    back = table_first_layers(table)
    assert set(back) == {"x"} and np.array_equal(back["x"].directions, a.directions) and back["x"].width == 4
    kept = first_layers_table(["x", "y"], [a, None], keep_missing=True)
    assert kept.column("model_id").to_pylist() == ["x", "y"] and kept.column("directions").null_count == 1
    assert set(table_first_layers(kept)) == {"x"}
