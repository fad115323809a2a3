"""The foreign zoo: written by independent code, graphified by inference, scored within itself and against the zoo."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from raywse.eval.foreign import ForeignZoo, foreign_counts, foreign_scores, load_foreign, read_foreign_manifest
from raywse.eval.view import ZooView
from raywse.graph.probes import INFERRED


def test_foreign_zoo_code_is_independent_of_raywse():
    """The foreign zoo is written by code that imports nothing of raywse (so its checkpoints are a user's)."""
    source = (Path(__file__).parents[2] / "foreign" / "train_foreign.py").read_text()
    assert "import raywse" not in source and "from raywse" not in source


def test_foreign_checkpoints_graphify_without_a_spec(tiny_foreign):
    foreign = load_foreign(tiny_foreign)
    assert len(foreign.ids) == 28 and not foreign.errors
    assert foreign.learned.mean() > 0.8
    assert all(g.model_id == m for g, m in zip(foreign.graphs, foreign.ids, strict=True))


def test_foreign_checkpoints_are_probed_on_their_own_datasets_rows(tiny_foreign):
    """Nothing states their normalisation or activation; inference finds each file's dataset among the zoo's probe
    sets (iris, wine, breast cancer and digits differ in input size, so a wrong one cannot run) and, for most, the
    input normalisation the foreign code used (digits scaled to [-1, 1]: ``signed``)."""
    foreign = load_foreign(tiny_foreign)
    rows = {r["model_id"]: r for r in read_foreign_manifest(tiny_foreign)}
    datasets = [rows[m]["dataset"] for m in foreign.ids]
    sources = [g.probe_source for g in foreign.graphs]
    assert all(s.startswith(f"train:{d}|") and INFERRED in s for s, d in zip(sources, datasets, strict=True))
    digits = [s for s, d in zip(sources, datasets, strict=True) if d == "digits"]
    assert sum("|signed " in s for s in digits) > len(digits) / 2
    counts = foreign_counts({"": foreign}, str(tiny_foreign))
    assert sum(counts["probe_sources"].values()) == len(foreign.ids) == sum(counts["inferred_activations"].values())
    inferred = [s.partition(INFERRED)[2].strip() for s in sources]
    stated = [rows[m]["activation"] for m in foreign.ids]
    assert counts["activation_as_stated"] == sum(i == s for i, s in zip(inferred, stated, strict=True))


def _view(tasks: list[str]) -> ZooView:
    n = len(tasks)
    return ZooView(
        ids=[f"z{i}" for i in range(n)], task=np.array(tasks), family=np.array(["mlp"] * n),
        split=np.array(["train"] * n), parent=np.array([""] * n), test_acc=np.ones(n), group=np.array([""] * n),
        arch=np.array(["a"] * n), run=np.array([f"r{i}" for i in range(n)]), parent_run=np.array([""] * n),
        learned=np.ones(n, dtype=bool),
    )  # fmt: skip


def test_foreign_scores():
    """Task axes shared by both zoos: perfect within-foreign and foreign-to-zoo retrieval; a foreign task the zoo
    lacks asks no foreign-to-zoo query."""
    axes = {"a": 0, "b": 1, "c": 2}
    zoo_tasks, foreign_tasks = ["a", "a", "b", "b"], ["a", "a", "b", "b", "c", "c"]
    z_zoo = np.eye(3, dtype=np.float32)[[axes[t] for t in zoo_tasks]]
    z_foreign = np.eye(3, dtype=np.float32)[[axes[t] for t in foreign_tasks]]
    foreign = ForeignZoo([f"f{i}" for i in range(6)], np.array(foreign_tasks), np.ones(6, dtype=bool), {}, [])
    out = foreign_scores(z_foreign, foreign, z_zoo, _view(zoo_tasks), (1, 5, 10), 5, seed=0)
    assert out["foreign"]["queries"] == 6 and out["foreign"]["precision@1"] == 1.0
    assert out["foreign_to_zoo"]["queries"] == 4 and out["foreign_to_zoo"]["precision@1"] == 1.0
    assert out["foreign_to_zoo"]["recall@5"] == 1.0
    foreign.learned[0] = False  # an unlearned foreign model neither queries nor counts as relevant
    out = foreign_scores(z_foreign, foreign, z_zoo, _view(zoo_tasks), (1, 5, 10), 5, seed=0)
    assert out["foreign"]["queries"] == 4 and out["foreign_to_zoo"]["queries"] == 3
