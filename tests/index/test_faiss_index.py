"""EmbeddingIndex: exact and IVF search, persistence, versioning, crash safety (random vectors, no Ray)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from raywse.core.artifacts import IndexFiles
from raywse.index.faiss_index import (
    EmbeddingIndex,
    IndexConfig,
    IndexVersionError,
    current_version_dir,
    read_meta,
)
from raywse.metrics import normalize

REPO = Path(__file__).resolve().parents[2]


def clustered(n: int, dim: int = 32, clusters: int = 200, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    """Unit vectors of Gaussian blobs around random centres (so nearest neighbours are meaningful)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    return normalize(centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, dim)).astype(np.float32))


def ids_for(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_exact_index_finds_each_vector_first():
    vecs = clustered(500)
    index = EmbeddingIndex.build(ids_for(500), vecs, "v1", IndexConfig(use_gpu=False))
    assert index.kind == "flat"
    ids, scores = index.search(vecs, 5)
    assert [row[0] for row in ids] == ids_for(500)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # descending


def test_ivf_recall_at_10_vs_exact():
    n, dim = 20_000, 32
    data = clustered(n + 300, dim, spread=1.0)  # overlapping blobs: neighbours straddle IVF lists
    vecs, queries = data[:n], data[n:]
    exact = EmbeddingIndex.build(ids_for(n), vecs, "v1", IndexConfig(use_gpu=False))
    ivf = EmbeddingIndex.build(ids_for(n), vecs, "v1", IndexConfig(exact_threshold=10_000, use_gpu=False))
    assert (exact.kind, ivf.kind) == ("flat", "ivf")
    truth, _ = exact.search(queries, 10)
    approx, _ = ivf.search(queries, 10)
    recall = np.mean([len(set(t) & set(a)) / 10 for t, a in zip(truth, approx, strict=True)])
    assert 0.9 <= recall < 1.0, recall  # approximate, yet good


def test_k_is_capped_at_index_size():
    index = EmbeddingIndex.build(ids_for(3), clustered(3), "v1")
    ids, scores = index.search(clustered(2, seed=5), 10)
    assert len(ids[0]) == 3 and scores.shape == (2, 3)


def test_save_load_round_trip(tmp_path):
    vecs = clustered(2_000)
    for config in (IndexConfig(use_gpu=False), IndexConfig(exact_threshold=1_000, nprobe=8, use_gpu=False)):
        index = EmbeddingIndex.build(ids_for(2_000), vecs, "v1", config)
        out = tmp_path / index.kind
        index.save(out)
        loaded = EmbeddingIndex.load(out, expected_encoder_version="v1")
        assert (loaded.ids, loaded.kind, loaded.dim, loaded.encoder_version) == (index.ids, index.kind, 32, "v1")
        assert loaded.config.nprobe == config.nprobe
        meta = read_meta(out)
        assert meta["count"] == 2_000 and meta["kind"] == index.kind and meta["created"]
        q = clustered(20, seed=3)
        assert loaded.search(q, 10)[0] == index.search(q, 10)[0]


def test_version_mismatch_is_refused(tmp_path):
    EmbeddingIndex.build(ids_for(10), clustered(10), "enc-aaa").save(tmp_path)
    with pytest.raises(IndexVersionError, match="built by encoder enc-aaa, this encoder is enc-bbb: rebuild"):
        EmbeddingIndex.load(tmp_path, expected_encoder_version="enc-bbb")
    assert len(EmbeddingIndex.load(tmp_path)) == 10  # no expectation: loads


def test_add_refuses_duplicates_and_keeps_ids_unique():
    index = EmbeddingIndex.build(ids_for(10), clustered(10), "v1")
    with pytest.raises(ValueError, match="duplicate model id.*m3"):
        index.add(["new", "m3"], clustered(2, seed=2))
    with pytest.raises(ValueError, match="duplicate model id"):
        index.add(["x", "x"], clustered(2, seed=2))
    assert len(index) == 10 and index.index.ntotal == 10
    new = clustered(5, seed=9)
    index.add(ids_for(5, "n"), new)
    assert len(set(index.ids)) == len(index) == index.index.ntotal == 15
    assert [row[0] for row in index.search(new, 1)[0]] == ids_for(5, "n")


def test_old_versions_are_bounded(tmp_path):
    index = EmbeddingIndex.build(ids_for(10), clustered(10), "v1")
    for _ in range(4):
        index.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / IndexFiles.VERSIONS).iterdir()) == ["3", "4"]
    assert (tmp_path / IndexFiles.CURRENT).read_text().strip() == "4"


KILLED_SAVE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import raywse.index.faiss_index as fi

    def pause(vdir):
        print("WROTE", vdir, flush=True)
        time.sleep(120)

    fi._before_commit = pause
    vecs = np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32)
    fi.EmbeddingIndex.build([f"new{i}" for i in range(50)], vecs, "v1").save(sys.argv[1])
    """
)


def test_save_killed_midway_leaves_old_index_loadable(tmp_path):
    EmbeddingIndex.build(ids_for(10), clustered(10), "v1").save(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("WROTE"), line
        assert (Path(line.split()[1]) / "index.faiss").exists()  # the new version is half-written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert current_version_dir(tmp_path).name == "1"
    loaded = EmbeddingIndex.load(tmp_path, expected_encoder_version="v1")
    assert len(loaded) == 10 and loaded.ids == ids_for(10)
    # the next save skips the orphan's number and removes it
    loaded.save(tmp_path)
    assert sorted(p.name for p in (tmp_path / IndexFiles.VERSIONS).iterdir()) == ["1", "3"]
    assert json.loads((tmp_path / IndexFiles.VERSIONS / "3" / "meta.json").read_text())["count"] == 10
