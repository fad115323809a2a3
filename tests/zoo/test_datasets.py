"""The zoo's probe sets: the same rows from the on-disk cache as from the dataset, a bad cache costs nothing, and the
exported rows are the probe rows before normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raywse.graph.probes import ProbeFile, probe_rows
from raywse.zoo import datasets


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYWSE_CACHE_DIR", str(tmp_path))
    datasets.probe_inputs.cache_clear()
    yield tmp_path / "probes"
    datasets.probe_inputs.cache_clear()


def test_probe_sets_are_cached_on_disk_and_read_back_identically(cache_dir):
    fresh = datasets.probe_inputs("iris", "standard")
    files = list(cache_dir.glob("iris-standard-*.npy"))
    assert len(files) == 1 and not list(cache_dir.glob(".*.tmp"))
    datasets.probe_inputs.cache_clear()
    cached = datasets.probe_inputs("iris", "standard")
    assert torch.equal(fresh, cached) and cached.dtype == torch.float32
    assert datasets.probe_inputs("iris", "unit").shape == fresh.shape  # another normalisation, another file
    assert len(list(cache_dir.glob("iris-*.npy"))) == 2


def test_a_corrupt_cache_file_is_recomputed_and_replaced(cache_dir):
    fresh = datasets.probe_inputs("wine", "unit")
    (path,) = cache_dir.glob("wine-unit-*.npy")
    for bad in (b"not an array", b""):  # garbage, and an empty file
        path.write_bytes(bad)
        datasets.probe_inputs.cache_clear()
        assert torch.equal(datasets.probe_inputs("wine", "unit"), fresh)
        assert np.array_equal(np.load(path), fresh.numpy())


def test_an_unwritable_cache_still_gives_the_probes(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("RAYWSE_CACHE_DIR", str(blocker))
    datasets.probe_inputs.cache_clear()
    try:
        assert datasets.probe_inputs("iris", "unit").shape[1] == 4
    finally:
        datasets.probe_inputs.cache_clear()


def test_exported_probe_rows_are_the_zoo_probe_rows_before_normalisation(tmp_path):
    """``raywse probes`` writes each dataset's probe rows as stored; normalised as a zoo model's inputs they are that
    model's probes, and a probe file keeping their name is read as the zoo's probe set."""
    path = datasets.write_zoo_probes(tmp_path / "zoo_probes.npz", ["digits", "wine"])
    stored = np.load(path)
    assert sorted(stored.files) == ["train:digits", "train:wine"]
    assert np.array_equal(stored["train:digits"], datasets.probe_inputs("digits", "unit").numpy())  # images as stored
    split = datasets._load_dataset("wine")
    for norm in datasets.INPUT_NORMS:
        ours = datasets._normaliser(split.x_train, norm, False)(stored["train:wine"])
        np.testing.assert_allclose(ours, datasets.probe_inputs("wine", norm).numpy(), rtol=1e-5, atol=1e-5)
    chosen = ProbeFile(path)((13,))
    zoo = datasets.zoo_probes("wine", "standard")((13,))
    assert probe_rows(chosen.source) == probe_rows(zoo.source) == "train:wine"
    assert chosen.source == "train:wine|file:zoo_probes.npz"
    with pytest.raises(ValueError, match="unknown datasets"):
        datasets.write_zoo_probes(tmp_path / "x.npz", ["imagenet"])
