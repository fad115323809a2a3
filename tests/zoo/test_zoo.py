"""The zoo is real: files match the manifest, accuracies reproduce from the files, every run is saved along its
training, models learn, and the batched trainer is exact."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raywse.core.artifacts import ZooFiles
from raywse.core.forward import forward
from raywse.core.io import load_checkpoint
from raywse.core.records import ModelRecord, table_to_records
from raywse.core.spec import ArchSpec, layer_shapes
from raywse.zoo.arch import MAX_TOKENS, Arch, init_params, normalised_biases
from raywse.zoo.batched import minibatch_indices, train_batched
from raywse.zoo.build import LEARNED_MARGIN, build_zoo
from raywse.zoo.datasets import get_task, list_tasks, load_task
from raywse.zoo.plan import ZooConfig


def _records(zoo) -> list[ModelRecord]:
    return table_to_records(pq.read_table(zoo / ZooFiles.MANIFEST), ModelRecord)


def test_manifest_matches_files(tiny_zoo):
    records = _records(tiny_zoo)
    assert 50 <= len(records) <= 150
    ids = [r.model_id for r in records]
    assert len(ids) == len(set(ids))
    assert {r.path for r in records} == {f"models/{p.name}" for p in (tiny_zoo / "models").iterdir()}
    for r in records:
        tensors, meta = load_checkpoint(tiny_zoo / r.path)
        assert meta["model_id"] == r.model_id and meta["task"] == r.task and meta["raywse_format"] == "1"
        assert meta["layer_spec"] == r.layer_spec and meta["input_norm"] == r.input_norm
        spec = ArchSpec.from_json(r.layer_spec)
        assert spec.validate(tensors)[-1] == (r.num_classes,)
        assert r.dataset in r.description and f"step {r.step} of {r.steps}" in r.description
        hparams = json.loads(r.hparams)
        assert hparams["steps"] == r.steps and hparams["input_norm"] == r.input_norm


def test_recorded_accuracy_chance_and_learned_reproduced_from_files(tiny_zoo):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the zoo's workers evaluate single-threaded
    try:
        for r in _records(tiny_zoo):
            tensors, _ = load_checkpoint(tiny_zoo / r.path)
            spec = ArchSpec.from_json(r.layer_spec)
            data = load_task(r.task, r.input_norm)
            with torch.no_grad():
                pred = forward(spec, tensors, data.x_test.reshape(-1, *spec.input_shape)).argmax(-1)
            assert int((pred == data.y_test).sum()) == round(r.test_acc * len(data.y_test)), r.model_id
            majority = np.bincount(data.y_test.numpy()).max() / len(data.y_test)
            assert r.chance_acc == pytest.approx(majority)
            assert r.learned == (r.test_acc >= r.chance_acc + LEARNED_MARGIN)
    finally:
        torch.set_num_threads(threads)


def test_models_learn_and_every_task_has_both_families(tiny_zoo):
    records = _records(tiny_zoo)
    learned = np.mean([r.learned for r in records])
    print(f"tiny zoo: {learned:.1%} of {len(records)} models learned")
    assert learned >= 0.85  # the tiny preset trains briefly; the demo preset's bar (97%) is checked in bench/
    accs = np.array([r.test_acc for r in records])
    assert accs.max() > 0.9 and accs.std() > 0.08  # accuracies spread (0.096 with the transformer family)
    tasks = [t for t in list_tasks() if t.name in ZooConfig.tiny().tasks]
    assert len(tasks) == len(ZooConfig.tiny().tasks)
    for task in tasks:
        assert {r.family for r in records if r.task == task.name} == set(task.families), task.name


def test_runs_are_saved_along_training(tiny_zoo):
    """Every run has one row per snapshot, in step order, sharing everything but the step and its accuracies."""
    runs: dict[str, list[ModelRecord]] = {}
    for r in _records(tiny_zoo):
        runs.setdefault(r.run_id, []).append(r)
    for run_id, rows in runs.items():
        steps = [r.step for r in rows]
        assert len(rows) == len(ZooConfig.tiny().snapshots) and steps == sorted(steps), run_id
        assert steps[-1] == rows[0].steps
        assert len({(r.task, r.hparams, r.layer_spec, r.parent_id, r.input_norm) for r in rows}) == 1
        epochs = [r.epoch for r in rows]
        batch = json.loads(rows[0].hparams)["batch_size"]
        assert epochs[-1] == pytest.approx(rows[0].steps * batch / len(load_task(rows[0].task).x_train))
        first, last = (load_checkpoint(tiny_zoo / r.path)[0] for r in (rows[0], rows[-1]))
        assert any(not torch.equal(first[k], last[k]) for k in first)


def test_children_start_from_a_final_snapshot(tiny_zoo):
    records = {r.model_id: r for r in _records(tiny_zoo)}
    children = [r for r in records.values() if r.parent_id]
    assert children
    for child in children:
        parent = records[child.parent_id]
        assert parent.step == parent.steps and not parent.parent_id
        assert parent.layer_spec == child.layer_spec and parent.input_norm == child.input_norm
        assert get_task(parent.task).interface == get_task(child.task).interface


def test_rerun_is_idempotent(tiny_zoo):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_zoo.rglob("*") if p.is_file()}
    manifest = (tiny_zoo / ZooFiles.MANIFEST).read_bytes()
    build_zoo(ZooConfig.tiny(), tiny_zoo, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in tiny_zoo.rglob("*") if p.is_file()}
    assert before == after
    assert (tiny_zoo / ZooFiles.MANIFEST).read_bytes() == manifest


@pytest.mark.parametrize(
    "arch,task",
    [
        (Arch("mlp", (32, 16), "gelu"), "digits/parity"),
        (Arch("mlp", (32,), "tanh"), "digits/parity"),  # batched training's tanh is 2·sigmoid(2x) − 1
        (Arch("cnn", (16,), "relu", (4, 8), (1, 2)), "digits/all10"),
    ],
)
def test_batched_trainer_matches_plain_training(arch, task):
    from raywse.zoo.batched import train_reference

    data = load_task(task)
    shape = data.input_shape_for(arch.family)
    spec = arch.spec(shape)
    seeds, steps, batch = [3, 4, 5], 8, 16
    inits = [init_params(arch, shape, data.num_classes, s) for s in seeds]
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    idx = torch.stack([minibatch_indices(len(data.x_train), steps, batch, s) for s in seeds], 1)
    lrs, wds = [1e-2, 3e-3, 1e-3], [0.0, 1e-3, 1e-4]
    (out,) = train_batched(spec, stacked, data.x_train, data.y_train, idx, torch.tensor(lrs), torch.tensor(wds))
    for m in range(len(seeds)):
        ref = train_reference(spec, inits[m], data.x_train, data.y_train, idx[:, m], lrs[m], wds[m])
        for k in spec.tensor_names():
            assert not torch.equal(ref[k], inits[m][k])
            torch.testing.assert_close(out[k][m], ref[k], atol=1e-4, rtol=0)


def test_per_model_labels_and_snapshots():
    """Models of different label maps in one program train as each would alone; snapshots are the parameters after
    that many steps."""
    arch, shape = Arch("mlp", (16,), "tanh"), (64,)
    spec = arch.spec(shape)
    tasks = [load_task("digits/all10"), load_task("digits/shift1")]
    x = tasks[0].x_train
    inits = [init_params(arch, shape, 10, s) for s in (1, 2)]
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    idx = torch.stack([minibatch_indices(len(x), 6, 8, s) for s in (1, 2)], 1)
    lr, wd = torch.tensor([1e-2, 1e-2]), torch.zeros(2)
    y = torch.stack([t.y_train for t in tasks])
    snaps = train_batched(spec, stacked, x, y, idx, lr, wd, (3, 6))
    for m, task in enumerate(tasks):
        alone = {k: v[m : m + 1] for k, v in stacked.items()}
        for step, snap in zip((3, 6), snaps, strict=True):
            (ref,) = train_batched(spec, alone, x, task.y_train, idx[:step, m : m + 1], lr[m : m + 1], wd[:1])
            for k in spec.tensor_names():
                torch.testing.assert_close(snap[k][m], ref[k][0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="snapshot_steps"):
        train_batched(spec, stacked, x, y, idx, lr, wd, (3,))


def test_tasks_share_inputs_and_normalisations_differ():
    all10, shift1, parity = load_task("digits/all10"), load_task("digits/shift1"), load_task("digits/parity")
    assert torch.equal(all10.x_train, shift1.x_train) and torch.equal(all10.x_test, parity.x_test)
    assert torch.equal(shift1.y_train, (all10.y_train + 1) % 10)
    assert torch.equal(parity.y_train, all10.y_train % 2)
    flip, last5 = load_task("digits/flip"), load_task("digits/last5")
    assert torch.equal(flip.x_train.view(-1, 8, 8), all10.x_train.view(-1, 8, 8).flip(-1))
    assert last5.num_classes == 5 and set(last5.y_test.tolist()) == set(range(5))
    assert all10.input_shape_for("cnn") == (1, 8, 8) and all10.input_shape_for("mlp") == (64,)
    assert len(list_tasks()) >= 24
    for name in ("digits/all10", "mnist1d/parity", "wine"):
        unit, standard = load_task(name, "unit"), load_task(name, "standard")
        low = 0 if unit.image_shape else -1  # images as stored, other inputs scaled to [-1, 1]
        assert unit.x_train.min() >= low and unit.x_train.max() <= 1
        assert standard.x_train.mean(0).abs().max() < 1e-4
        assert torch.equal(unit.y_test, standard.y_test)
    with pytest.raises(ValueError, match="input_norm"):
        load_task("iris", "zscore")


def test_batched_resnets_train_as_if_alone_and_measure_their_batch_norm():
    """Batch norm statistics and residual projections stay per model: three ResNets trained as one program end
    exactly where each ends trained alone, and the measured running statistics make the checkpoint's own forward
    (eval-mode batch norm) agree with the batched evaluation."""
    from raywse.zoo.batched import batched_accuracy, model_accuracy

    arch = Arch("resnet", (), "relu", (8, 8, 16), (2, 1, 2))  # an identity block, then a projection block
    data = load_task("digits/all10")
    spec = arch.spec(data.input_shape_for("resnet"))
    assert [ly.name for ly in spec.layers if ly.kind == "add"] == ["", "layers.11"]
    seeds, steps, batch = [3, 4, 5], 40, 16  # 640 samples drawn: the statistics read the last 512
    inits = [init_params(arch, spec.input_shape, 10, s) for s in seeds]
    spec.validate(inits[0])
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    idx = torch.stack([minibatch_indices(len(data.x_train), steps, batch, s) for s in seeds], 1)
    lrs, wds = torch.tensor([1e-2, 3e-3, 1e-3]), torch.tensor([0.0, 1e-3, 1e-4])
    (out,) = train_batched(spec, stacked, data.x_train, data.y_train, idx, lrs, wds)
    for m in range(len(seeds)):
        alone = {k: v[m : m + 1] for k, v in stacked.items()}
        (one,) = train_batched(spec, alone, data.x_train, data.y_train, idx[:, m : m + 1], lrs[m : m + 1],
                               wds[m : m + 1])  # fmt: skip
        for k in spec.tensor_names():
            torch.testing.assert_close(out[k][m], one[k][0], atol=1e-5, rtol=1e-4)
        assert not torch.equal(out["layers.1.running_var"][m], inits[m]["layers.1.running_var"])
    assert normalised_biases(spec) and all(not out[k].any() for k in normalised_biases(spec))  # held at zero
    x, y = data.x_test, data.y_test
    batched = batched_accuracy(spec, out, x, y)
    for m in range(len(seeds)):
        own = model_accuracy(spec, {k: v[m] for k, v in out.items()}, x, y)
        assert abs(own - batched[m]) <= 1 / len(y)


@pytest.mark.parametrize(
    ("task", "stem_convs", "positions", "learned"),
    [("digits/all10", 1, 16, 0.6), ("mnist14/all10", 2, 16, 0.6), ("mnist1d/all10", 2, 10, 0.25)],
)
def test_batched_transformers_train_as_if_alone_and_compute_what_their_checkpoints_compute(
    task, stem_convs, positions, learned
):
    """Attention, layer norms and residual adds stay per model: three transformers trained as one program end where
    each ends trained alone, learn, and the batched evaluation agrees with each checkpoint's own forward. The stem
    downsamples 8×8 digits once and 14×14 ones twice (16 positions either way), 40-sample MNIST-1D signals twice with
    1-D convs (10 positions, no ``to_sequence``: a signal's map is a sequence already)."""
    from raywse.zoo.batched import batched_accuracy, model_accuracy

    arch = Arch("transformer", (16, 32), "gelu", (8,), (2,), heads=2)  # two blocks
    data = load_task(task)
    spec = arch.spec(data.input_shape_for("transformer"))
    kinds = [ly.kind for ly in spec.layers]
    signal = len(spec.input_shape) == 2
    assert kinds.count("attention") == 2 and kinds[stem_convs] == ("attention" if signal else "to_sequence")
    assert kinds[:stem_convs] == ["conv1d" if signal else "conv2d"] * stem_convs
    assert layer_shapes(spec, dict(arch.param_shapes(spec.input_shape, 10)))[stem_convs] == (8, positions)
    assert positions <= MAX_TOKENS
    seeds, steps, batch = [3, 4, 5], 150, 32
    inits = [init_params(arch, spec.input_shape, 10, s) for s in seeds]
    spec.validate(inits[0])
    assert arch.macs_per_sample(spec.input_shape, 10) > 0
    stacked = {k: torch.stack([i[k] for i in inits]) for k in spec.tensor_names()}
    idx = torch.stack([minibatch_indices(len(data.x_train), steps, batch, s) for s in seeds], 1)
    lrs, wds = torch.tensor([1e-2, 5e-3, 3e-3]), torch.tensor([0.0, 1e-4, 1e-3])
    (out,) = train_batched(spec, stacked, data.x_train, data.y_train, idx, lrs, wds)
    (one,) = train_batched(spec, {k: v[1:2] for k, v in stacked.items()}, data.x_train, data.y_train, idx[:, 1:2],
                           lrs[1:2], wds[1:2])  # fmt: skip
    for k in spec.tensor_names():
        torch.testing.assert_close(out[k][1], one[k][0], atol=1e-4, rtol=1e-3)  # 150 steps of float order
    x, y = data.x_test, data.y_test
    batched = batched_accuracy(spec, out, x, y)
    for m in range(len(seeds)):
        own = model_accuracy(spec, {k: v[m] for k, v in out.items()}, x, y)
        assert abs(own - batched[m]) <= 1 / len(y)
    assert max(batched) > learned, batched  # learned (chance: 0.1)


@pytest.mark.parametrize("length", [10, 16])
def test_batched_softmax_matches_torch_in_value_and_gradient(length):
    from raywse.zoo.batched import _softmax

    scores = (torch.randn(64, length, length, generator=torch.Generator().manual_seed(length)) * 4).requires_grad_()
    weights = torch.randn(64, length, length)
    ours = _softmax(scores)
    (grad,) = torch.autograd.grad((ours * weights).sum(), scores)
    theirs = torch.softmax(scores, dim=-1)
    (expected,) = torch.autograd.grad((theirs * weights).sum(), scores)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, expected, atol=1e-5, rtol=1e-4)
