"""The zoo is real: files match the manifest, accuracies reproduce from the files, the batched trainer is exact."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raywse.core.artifacts import ZooFiles
from raywse.core.io import load_checkpoint
from raywse.core.records import ModelRecord, table_to_records
from raywse.core.spec import ArchSpec, forward
from raywse.zoo.batched import Arch, init_params, minibatch_indices, train_batched, train_reference
from raywse.zoo.build import ZooConfig, build_zoo, plan_zoo
from raywse.zoo.datasets import list_tasks, load_task


def _records(zoo) -> list[ModelRecord]:
    return table_to_records(pq.read_table(zoo / ZooFiles.MANIFEST), ModelRecord)


def test_manifest_matches_files(tiny_zoo):
    records = _records(tiny_zoo)
    assert 40 <= len(records) <= 80
    ids = [r.model_id for r in records]
    assert len(ids) == len(set(ids))
    assert {r.path for r in records} == {f"models/{p.name}" for p in (tiny_zoo / "models").iterdir()}
    for r in records:
        tensors, meta = load_checkpoint(tiny_zoo / r.path)
        assert meta["model_id"] == r.model_id and meta["task"] == r.task and meta["raywse_format"] == "1"
        assert meta["layer_spec"] == r.layer_spec
        spec = ArchSpec.from_json(r.layer_spec)
        spec.validate(tensors)
        assert spec.output_size(tensors) == r.num_classes
        assert (r.task == r.dataset or r.task not in r.description) and r.dataset in r.description
        assert json.loads(r.hparams)["steps"] == r.steps


def test_recorded_accuracy_reproduced_from_files(tiny_zoo):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the zoo's workers evaluate single-threaded
    try:
        for r in _records(tiny_zoo):
            tensors, _ = load_checkpoint(tiny_zoo / r.path)
            spec = ArchSpec.from_json(r.layer_spec)
            data = load_task(r.task)
            with torch.no_grad():
                pred = forward(spec, tensors, data.x_test.reshape(-1, *spec.input_shape)).argmax(-1)
            assert int((pred == data.y_test).sum()) == round(r.test_acc * len(data.y_test)), r.model_id
    finally:
        torch.set_num_threads(threads)


def test_accuracies_are_real_and_spread(tiny_zoo):
    records = _records(tiny_zoo)
    all10 = [r.test_acc for r in records if r.task == "digits/all10"]
    assert np.median(all10) > 0.3  # chance is 0.1
    accs = np.array([r.test_acc for r in records])
    assert accs.max() > 0.9 and accs.std() > 0.1
    for task in list_tasks():
        if task.dataset in ("digits", "mnist14"):
            assert {r.family for r in records if r.task == task.name} == {"mlp", "cnn"}, task.name


def test_children_have_parents(tiny_zoo):
    records = {r.model_id: r for r in _records(tiny_zoo)}
    children = [r for r in records.values() if r.parent_id]
    assert children
    for child in children:
        parent = records[child.parent_id]
        assert parent.layer_spec == child.layer_spec and not parent.parent_id
        assert load_task(parent.task).x_train.shape == load_task(child.task).x_train.shape
    per_parent: dict[str, int] = {}
    for child in children:
        per_parent[child.parent_id] = per_parent.get(child.parent_id, 0) + 1
    assert set(per_parent.values()) <= {2, 3}


def test_rerun_is_idempotent(tiny_zoo):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_zoo.rglob("*") if p.is_file()}
    manifest = (tiny_zoo / ZooFiles.MANIFEST).read_bytes()
    build_zoo(ZooConfig.tiny(), tiny_zoo, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in tiny_zoo.rglob("*") if p.is_file()}
    assert before == after
    assert (tiny_zoo / ZooFiles.MANIFEST).read_bytes() == manifest


def test_plan_is_deterministic_and_ids_unique():
    a, b = plan_zoo(ZooConfig.small()), plan_zoo(ZooConfig.small())
    ids = [m.model_id for g in a for m in g.models]
    assert ids == [m.model_id for g in b for m in g.models]
    assert len(ids) == len(set(ids)) and 600 <= len(ids) <= 1200


@pytest.mark.parametrize(
    "arch,task",
    [
        (Arch("mlp", (32, 16), "gelu"), "digits/parity"),
        (Arch("cnn", (16,), "relu", (4, 8), (1, 2)), "digits/all10"),
    ],
)
def test_batched_trainer_matches_plain_training(arch, task):
    data = load_task(task)
    shape = data.input_shape_for(arch.family)
    spec = arch.spec(shape)
    seeds, steps, batch = [3, 4, 5], 8, 16
    inits = [init_params(arch, shape, data.num_classes, s) for s in seeds]
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    idx = torch.stack([minibatch_indices(len(data.x_train), steps, batch, s) for s in seeds], 1)
    lrs, wds = [1e-2, 3e-3, 1e-3], [0.0, 1e-3, 1e-4]
    out = train_batched(spec, stacked, data.x_train, data.y_train, idx, torch.tensor(lrs), torch.tensor(wds))
    for m in range(len(seeds)):
        ref = train_reference(spec, inits[m], data.x_train, data.y_train, idx[:, m], lrs[m], wds[m])
        for k in spec.tensor_names():
            assert not torch.equal(ref[k], inits[m][k])
            torch.testing.assert_close(out[k][m], ref[k], atol=1e-4, rtol=0)


def test_task_label_maps_share_inputs():
    all10, shift1, parity = load_task("digits/all10"), load_task("digits/shift1"), load_task("digits/parity")
    assert torch.equal(all10.x_train, shift1.x_train) and torch.equal(all10.x_test, parity.x_test)
    assert torch.equal(shift1.y_train, (all10.y_train + 1) % 10)
    assert torch.equal(parity.y_train, all10.y_train % 2)
    flip, last5 = load_task("digits/flip"), load_task("digits/last5")
    assert torch.equal(flip.x_train.view(-1, 8, 8), all10.x_train.view(-1, 8, 8).flip(-1))
    assert last5.num_classes == 5 and set(last5.y_test.tolist()) == set(range(5))
    assert all10.input_shape_for("cnn") == (1, 8, 8) and all10.input_shape_for("mlp") == (64,)
