"""The index on a GPU build of FAISS that sees a GPU answers as on the CPU: exact and IVF search, save and load,
exhaustive lineage searches and ``k`` past the GPU's limit. Runs where FAISS sees a GPU (the lent GPU machine, with a
GPU build carried there: bench/gpu_check.sh); skipped elsewhere."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from test_faiss_index import clustered, ids_for

from raywse.index.faiss_index import GPU_MAX_K, EmbeddingIndex, IndexConfig
from raywse.metrics import normalize

pytestmark = pytest.mark.skipif(faiss.get_num_gpus() == 0, reason="needs a GPU build of FAISS and a GPU")


def test_the_default_config_puts_the_index_on_the_gpu_and_finds_what_the_cpu_finds(tmp_path):
    vecs, ids = clustered(3_000), ids_for(3_000)
    gpu = EmbeddingIndex.build(ids, vecs, "v1")
    cpu = EmbeddingIndex.build(ids, vecs, "v1", IndexConfig(use_gpu=False))
    assert gpu.on_gpu and not cpu.on_gpu and isinstance(gpu.index, faiss.GpuIndex)
    found, scores = gpu.search(vecs[:200], 10)
    expected, expected_scores = cpu.search(vecs[:200], 10)
    assert np.mean([set(a) == set(b) for a, b in zip(found, expected, strict=True)]) > 0.99  # ties may reorder
    np.testing.assert_allclose(scores, expected_scores, atol=1e-4)
    gpu.save(tmp_path / "index")
    loaded = EmbeddingIndex.load(tmp_path / "index", expected_encoder_version="v1")
    assert isinstance(loaded.index, faiss.GpuIndex) and loaded.search(vecs[:200], 10)[0] == found


def test_a_k_past_the_gpu_limit_is_answered_by_a_host_copy():
    vecs, ids = clustered(GPU_MAX_K + 500), ids_for(GPU_MAX_K + 500)
    gpu = EmbeddingIndex.build(ids, vecs, "v1")
    found, scores = gpu.search(vecs[:3], GPU_MAX_K + 100)
    assert scores.shape == (3, GPU_MAX_K + 100) and np.isfinite(scores).all()
    assert [row[0] for row in found] == ids[:3] and isinstance(gpu.index, faiss.GpuIndex)  # still on the GPU


def test_ivf_on_the_gpu_trains_searches_and_probes_every_list_when_exhaustive(tmp_path):
    # Random directions (no clusters): one list holds few of a query's neighbours, every list holds them all.
    n, rng = 20_000, np.random.default_rng(0)
    vecs, ids = normalize(rng.standard_normal((n, 32)).astype(np.float32)), ids_for(n)
    queries = normalize(rng.standard_normal((300, 32)).astype(np.float32))
    config = IndexConfig(exact_threshold=10_000, nprobe=1)
    gpu = EmbeddingIndex.build(ids, vecs, "v1", config)
    assert gpu.kind == "ivf" and isinstance(gpu.index, faiss.GpuIndex)
    truth, _ = EmbeddingIndex.build(ids, vecs, "v1", IndexConfig(use_gpu=False)).search(queries, 10)

    def recall(found):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)])

    assert recall(gpu.search(queries, 10)[0]) < 0.5 < 0.99 < recall(gpu.search(queries, 10, exhaustive=True)[0])
    assert recall(gpu.search(queries, 10)[0]) < 0.5  # the exhaustive search left the index's nprobe as it was
    gpu.save(tmp_path / "ivf")
    loaded = EmbeddingIndex.load(tmp_path / "ivf", config=config)
    assert loaded.kind == "ivf" and isinstance(loaded.index, faiss.GpuIndex)
    assert recall(loaded.search(queries, 10, exhaustive=True)[0]) > 0.99
