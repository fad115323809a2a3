"""The zoo's probe catalogue: each dataset's train-split probe rows, under every normalisation tried, at its size."""

from __future__ import annotations

import numpy as np
import pytest

from raywse.graph.probes import probe_rows
from raywse.zoo.datasets import SPLIT_SEED, STORED_UNITS, TEST_FRACTION, load_task, probe_inputs, stored_probe_inputs
from raywse.zoo.probe_catalogue import INPUT_SIZES, zoo_catalogue


@pytest.mark.parametrize("dataset", list(STORED_UNITS))
def test_input_sizes_are_the_datasets(dataset):
    assert (
        stored_probe_inputs(dataset).shape[1] == INPUT_SIZES[dataset] == probe_inputs(dataset).reshape(64, -1).shape[1]
    )


def test_every_candidate_is_a_normalisation_of_the_train_probe_rows():
    digits = zoo_catalogue(64)
    assert {probe_rows(c.source) for c in digits} == {"train:digits"}
    assert [c.source for c in digits] == [f"train:digits|{n}" for n in ("unit", "standard", "signed", "global")]
    raw = stored_probe_inputs("digits")
    np.testing.assert_allclose(digits[0].inputs.numpy(), raw, atol=1e-6)
    np.testing.assert_allclose(digits[2].inputs.numpy(), 2 * raw - 1, atol=1e-6)
    for candidate in zoo_catalogue(13):  # each an affine per-feature map of the same rows: rank-preserving
        order = np.argsort(candidate.inputs.numpy(), axis=0, kind="stable")
        np.testing.assert_array_equal(order, np.argsort(stored_probe_inputs("wine"), axis=0, kind="stable"))
    minmax = {c.source: c.inputs.numpy() for c in zoo_catalogue(13)}["train:wine|minmax"]
    maxabs = {c.source: c.inputs.numpy() for c in zoo_catalogue(13)}["train:wine|maxabs"]
    assert minmax.min() >= 0 and minmax.max() <= 1 and np.abs(maxabs).max() <= 1
    assert zoo_catalogue(5) == ()


def test_maxabs_divides_by_the_train_splits_largest_absolute_value():
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    d = load_wine()
    x_train = train_test_split(d.data.astype(np.float32), d.target, test_size=TEST_FRACTION, stratify=d.target,
                               random_state=SPLIT_SEED)[0]  # fmt: skip
    maxabs = {c.source: c.inputs.numpy() for c in zoo_catalogue(13)}["train:wine|maxabs"]
    np.testing.assert_allclose(maxabs, stored_probe_inputs("wine") / np.abs(x_train).max(0), rtol=1e-5)


def test_catalogue_rows_never_come_from_the_test_split():
    task = load_task("iris", "unit")
    train = {tuple(r) for r in task.x_train.numpy().round(5)}
    unit = {c.source: c.inputs.numpy() for c in zoo_catalogue(4)}["train:iris|unit"]
    rows = {tuple(r) for r in unit.round(5)}
    assert rows <= train


def test_mnist28_rows_are_mnist14s_probe_images_at_full_size_and_named_so():
    full = {c.source: c.inputs for c in zoo_catalogue(784)}
    assert set(full) == {f"train:mnist14|{n} mnist28" for n in ("unit", "standard", "signed", "global")}
    pooled = full["train:mnist14|unit mnist28"].reshape(-1, 14, 2, 14, 2).mean(dim=(2, 4)).reshape(64, -1)
    np.testing.assert_allclose(pooled.numpy(), probe_inputs("mnist14", "unit").numpy(), atol=1e-5)


def test_global_standardises_by_the_train_splits_pixel_mean_and_std():
    x_train = load_task("digits/all10", "unit").x_train.numpy()
    expected = (stored_probe_inputs("digits") - x_train.mean()) / x_train.std()
    np.testing.assert_allclose(probe_inputs("digits", "global").numpy(), expected, rtol=1e-4, atol=1e-5)
