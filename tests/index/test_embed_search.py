"""Ray Data embedding, incremental index builds and checkpoint search on the real tiny zoo."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

import raywse.index.embed as embed_mod
from raywse.core.artifacts import GraphFiles
from raywse.core.config import ConfigError
from raywse.core.embeddings import table_vectors
from raywse.core.io import CheckpointError
from raywse.data.graphify import load_graphs, shard_paths
from raywse.graph.checkpoint import graphify_checkpoint, read_spec_file
from raywse.index.embed import EmbedActor, build_index
from raywse.index.faiss_index import EmbeddingIndex, IndexVersionError, index_embeddings, index_first_layers
from raywse.index.search import Searcher, search_checkpoint
from raywse.models.checkpoint import export_encoder, load_encoder
from raywse.models.encode import encode
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

sys.path.insert(0, str(Path(__file__).parents[1]))
from packaged import MINILM, PACKAGED, SILERO_SPEC, SILERO_VAD, package_file, write_packaged  # noqa: E402


def make_encoder(out: Path, seed: int) -> str:
    config = EncoderConfig(depth=1, hidden=16, embed_dim=8, seed=seed)
    return export_encoder(NeuralGraphEncoder(config).state_dict(), config, out)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoders")
    make_encoder(root / "a", 0)
    make_encoder(root / "b", 1)
    return {"a": root / "a", "b": root / "b"}


def subset_graphs(graphs_dir: Path, out: Path, num_shards: int) -> Path:
    """A graphs dir holding only the first ``num_shards`` shards (and a matching manifest)."""
    (out / GraphFiles.SHARDS).mkdir(parents=True)
    names = [Path(p).name for p in shard_paths(graphs_dir)[:num_shards]]
    for name in names:
        shutil.copy(graphs_dir / GraphFiles.SHARDS / name, out / GraphFiles.SHARDS / name)
    manifest = pq.read_table(graphs_dir / GraphFiles.MANIFEST)
    pq.write_table(manifest.filter(pc.is_in(manifest["shard"], pa.array(names))), out / GraphFiles.MANIFEST)
    return out


def in_process_embed(graphs_dir, encoder_dir, model_ids=None, **_) -> pa.Table:
    """``embed_graphs`` without Ray (same actor class), for the tests that don't exercise Ray Data."""
    table = pa.concat_tables([pq.read_table(p) for p in shard_paths(graphs_dir)])
    if model_ids is not None:
        table = table.filter(pc.is_in(table["model_id"], pa.array(model_ids, pa.string())))
    return EmbedActor(str(encoder_dir))(table)


def test_incremental_build_embeds_only_new_ids(tiny_graphs, encoders, tmp_path, monkeypatch):
    total = pq.read_table(tiny_graphs / GraphFiles.MANIFEST).num_rows
    embedded: list[str] = []

    def counting(*args, _impl=embed_mod.embed_graphs, **kwargs):
        table = _impl(*args, **kwargs)
        embedded.extend(table.column("model_id").to_pylist())
        return table

    part = subset_graphs(tiny_graphs, tmp_path / "part", 2)
    first_ids = pq.read_table(part / GraphFiles.MANIFEST).column("model_id").to_pylist()
    index_dir = tmp_path / "index"

    monkeypatch.setattr(embed_mod, "embed_graphs", lambda *a, **kw: counting(*a, _impl=in_process_embed, **kw))
    first = build_index(part, encoders["a"], index_dir)  # in-process: one Ray Data run below is enough
    assert (first["count"], first["embedded"], first["reused"], first["errors"]) == (
        len(first_ids),
        len(first_ids),
        0,
        {},
    )
    assert sorted(embedded) == sorted(first_ids)

    embedded.clear()
    monkeypatch.setattr(embed_mod, "embed_graphs", counting)  # the real Ray Data pipeline
    second = build_index(tiny_graphs, encoders["a"], index_dir)
    assert sorted(embedded) == sorted(
        set(pq.read_table(tiny_graphs / GraphFiles.MANIFEST)["model_id"].to_pylist()) - set(first_ids)
    )
    assert (second["count"], second["embedded"], second["reused"]) == (total, total - len(first_ids), len(first_ids))
    assert re.fullmatch(r"[1-9]\d* CPU actors?", second["embedded_by"]) and second["faiss_on_gpu"] is False  # no GPU

    index = EmbeddingIndex.load(index_dir, expected_encoder_version=first["encoder_version"])
    assert len(index) == len(set(index.ids)) == index.index.ntotal == total
    stored = index_embeddings(index_dir)
    assert sorted(stored["model_id"].to_pylist()) == sorted(index.ids)

    # vectors from the Ray pipeline equal an in-process forward pass; each graph finds itself first
    direct = in_process_embed(tiny_graphs, encoders["a"])
    order = {m: i for i, m in enumerate(stored["model_id"].to_pylist())}
    ray_vecs = np.array(stored["vector"].to_pylist(), np.float32)
    direct_vecs = np.array(direct["vector"].to_pylist(), np.float32)
    rows = [order[m] for m in direct["model_id"].to_pylist()]
    np.testing.assert_allclose(ray_vecs[rows], direct_vecs, atol=1e-5)
    by_id = {g.model_id: g for g in load_graphs(tiny_graphs)}
    encoder, _ = load_encoder(encoders["a"])
    queries = encode(encoder, [by_id[m] for m in direct["model_id"].to_pylist()]).embeddings  # the query form
    ids, scores = index.search(queries, 1)
    assert np.mean([row[0] == m for row, m in zip(ids, direct["model_id"].to_pylist(), strict=True)]) > 0.9
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)

    embedded.clear()
    third = build_index(tiny_graphs, encoders["a"], index_dir)
    assert (third["embedded"], third["saved"], third["embedded_by"], embedded) == (0, False, "", [])


def test_several_cpu_actors_embed_every_graph_once_with_the_in_process_vectors(tiny_graphs, encoders, tmp_path):
    # Its own local Ray with 4 CPUs: three actors, the graphs split among them first (the reader packs the small
    # shards into one block, which one actor would otherwise embed alone). Same vectors as in-process, each id once.
    out = tmp_path / "vectors.parquet"
    code = (
        "import sys, pyarrow.parquet as pq; from raywse.core.ray_session import ensure_ray; "
        "from raywse.index.embed import embed_graphs; ensure_ray(num_cpus=4); "
        "pq.write_table(embed_graphs(sys.argv[1], sys.argv[2], use_gpu=False), sys.argv[3])"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    args = [sys.executable, "-c", code, str(tiny_graphs), str(encoders["a"]), str(out)]
    subprocess.run(args, check=True, env=env, capture_output=True, timeout=300)
    table, direct = pq.read_table(out), in_process_embed(tiny_graphs, encoders["a"])
    assert sorted(table.column("model_id").to_pylist()) == sorted(direct.column("model_id").to_pylist())
    vectors = dict(zip(table.column("model_id").to_pylist(), table.column("vector").to_pylist(), strict=True))
    expected = zip(direct.column("model_id").to_pylist(), direct.column("vector").to_pylist(), strict=True)
    for model_id, vector in expected:
        np.testing.assert_allclose(vectors[model_id], vector, atol=1e-5)


def test_gpu_embedding_on_a_machine_without_one_is_refused_not_left_waiting(tiny_graphs, encoders):
    with pytest.raises(ConfigError, match="index.use_gpu: Ray sees no GPU on this machine; leave --use-gpu off"):
        embed_mod.embed_graphs(tiny_graphs, encoders["a"], use_gpu=True)


def test_other_encoder_is_refused_unless_rebuild(tiny_graphs, encoders, tmp_path, monkeypatch):
    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    part = subset_graphs(tiny_graphs, tmp_path / "part", 1)
    built = build_index(part, encoders["a"], tmp_path / "index")
    with pytest.raises(IndexVersionError, match=f"built by encoder {built['encoder_version']}, this encoder is"):
        build_index(part, encoders["b"], tmp_path / "index")
    rebuilt = build_index(part, encoders["b"], tmp_path / "index", rebuild=True)
    assert rebuilt["encoder_version"] != built["encoder_version"]
    assert rebuilt["count"] == rebuilt["embedded"] == built["count"]
    assert EmbeddingIndex.load(tmp_path / "index", expected_encoder_version=rebuilt["encoder_version"])


def test_search_checkpoint_finds_itself_with_metadata(tiny_zoo, tiny_graphs, encoders, tmp_path, monkeypatch):
    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    build_index(tiny_graphs, encoders["a"], tmp_path / "index")
    record = pq.read_table(tiny_zoo / "manifest.parquet").to_pylist()[0]
    found = search_checkpoint(tiny_zoo / record["path"], tmp_path / "index", encoders["a"], tiny_zoo, k=5)
    assert [n.rank for n in found] == [1, 2, 3, 4, 5]
    assert found[0].model_id == record["model_id"] and math.isclose(found[0].score, 1.0, abs_tol=1e-4)
    assert (found[0].task, found[0].family, found[0].test_acc) == (record["task"], record["family"], record["test_acc"])
    bare = search_checkpoint(tiny_zoo / record["path"], tmp_path / "index", encoders["a"], k=2)
    assert bare[0].task == "" and math.isnan(bare[0].test_acc)


def test_packaged_checkpoints_of_other_architectures_find_neighbours(tiny_graphs, encoders, tmp_path, monkeypatch):
    """MTCNN's three nets (PReLU, output heads, 2x2 kernels), an MNIST CNN, silero-vad (with its spec file) and
    all-MiniLM-L6-v2 (BERT: its heads from the config.json beside it), as a user would query them."""
    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    build_index(tiny_graphs, encoders["a"], tmp_path / "index")
    table = index_embeddings(tmp_path / "index")
    ids, vectors = table.column("model_id").to_pylist(), table_vectors(table)
    encoder, _ = load_encoder(encoders["a"])
    queries = {name: (write_packaged(name, tmp_path), "") for name in sorted(PACKAGED)}
    queries["silero_vad"] = (package_file(*SILERO_VAD), str(SILERO_SPEC))
    queries["minilm"] = (package_file(*MINILM), "")
    for name, (path, spec) in queries.items():
        found = search_checkpoint(path, tmp_path / "index", encoders["a"], k=3, spec=spec)
        # the same answer as brute force: the unit query against every stored vector
        fallback = read_spec_file(spec) if spec else ""
        query = encode(encoder, [graphify_checkpoint(str(path), name, fallback_spec=fallback)]).embeddings[0]
        scores = vectors @ query / np.linalg.norm(query)
        best = np.argsort(-scores)[:3]
        assert [n.model_id for n in found] == [ids[i] for i in best], name
        np.testing.assert_allclose([n.score for n in found], scores[best], atol=1e-4)


def test_the_search_command_prints_the_neighbours_and_a_one_line_error(tiny_zoo, tiny_graphs, encoders, tmp_path,
                                                                       monkeypatch):  # fmt: skip
    import subprocess
    import sys

    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    build_index(tiny_graphs, encoders["a"], tmp_path / "index")
    record = pq.read_table(tiny_zoo / "manifest.parquet").to_pylist()[0]

    def search(path, *options) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "raywse.cli", "search", str(path), "--index", str(tmp_path / "index"),
               "--encoder", str(encoders["a"]), "--zoo", str(tiny_zoo), "-k", "3", *map(str, options)]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    found = search(tiny_zoo / record["path"])
    assert found.returncode == 0, found.stderr
    rows = found.stdout.splitlines()
    assert len(rows) == 4 and rows[1].split()[:2] == ["1", record["model_id"]], found.stdout
    assert f"probes: train:{record['dataset']}|" in found.stderr  # what it was run on, beside the table
    bad = search(tmp_path / "missing.safetensors")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "file not found" in bad.stderr
    silero = package_file(*SILERO_VAD)
    refused = search(silero)
    assert refused.returncode == 2 and "chain breaks at lstm_cell" in refused.stderr, refused.stderr
    found = search(silero, "--spec", SILERO_SPEC)
    assert found.returncode == 0 and len(found.stdout.splitlines()) == 4, found.stderr
    (tmp_path / "bad.json").write_text('{"input_shape": [1, 640], "layers": [{"kind": "mamba", "name": "x"}]}')
    bad_spec = search(silero, "--spec", tmp_path / "bad.json")
    assert bad_spec.returncode == 2 and bad_spec.stderr.count("\n") == 1, bad_spec.stderr
    assert "bad.json: unsupported layer kind 'mamba'" in bad_spec.stderr


def test_search_bad_input_raises_one_line_error(tiny_graphs, encoders, tmp_path):
    garbage = tmp_path / "junk.safetensors"
    garbage.write_bytes(b"\x00" * 4)
    with pytest.raises(CheckpointError, match=r"cannot graphify .*junk.safetensors \(read\): truncated") as err:
        search_checkpoint(garbage, tmp_path / "none", encoders["a"])
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="file not found"):
        search_checkpoint(tmp_path / "missing.safetensors", tmp_path / "none", encoders["a"])


def test_the_search_path_imports_neither_ray_nor_sklearn():
    """``raywse search`` does no Ray work: importing its path must not pay for Ray, sklearn or scipy (seconds)."""
    import subprocess
    import sys

    code = "import sys, raywse.cli, raywse.index.search; print(sorted({'ray', 'sklearn', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_searcher_adds_graphs_as_a_new_version_and_another_searcher_picks_it_up(
    tiny_graphs, encoders, tmp_path, monkeypatch
):
    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    first = subset_graphs(tiny_graphs, tmp_path / "first", 1)
    build_index(first, encoders["a"], tmp_path / "index")
    writer, reader = (Searcher(tmp_path / "index", encoders["a"]) for _ in range(2))
    indexed = set(writer.index.ids)
    new = [g for g in load_graphs(tiny_graphs) if g.model_id not in indexed][:3]
    version = writer.index_version
    added, errors = writer.add_graphs(new)
    assert added == [g.model_id for g in new] and not errors
    assert writer.index_version != version and len(writer.index) == len(indexed) + 3
    assert set(index_embeddings(tmp_path / "index")["model_id"].to_pylist()) == indexed | set(added)
    assert set(index_first_layers(tmp_path / "index")["model_id"].to_pylist()) == indexed | set(added)
    assert reader.refresh() and not reader.refresh()  # reloads once, then nothing changed
    assert reader.search_graph(new[0], k=1)[0].model_id == new[0].model_id
    assert new[0].model_id in reader.first_layers()  # read again for the version now in service
    assert writer.add_graphs(new[:1]) == ([], {new[0].model_id: "already in the index"})


def test_a_query_never_run_on_probes_meets_indexed_networks_on_its_first_layer_sketch(
    tiny_graphs, encoders, tmp_path, monkeypatch
):
    """The index stores probed networks with their first-layer sketch (the database form): the same network queried
    without its probe responses (as a foreign file of unknown activation is) finds itself first, its score the
    sketch's share plus the learned part's; the query form alone would score it at most the learned part's share."""
    from raywse.graph.transforms import HideProbes

    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    build_index(tiny_graphs, encoders["a"], tmp_path / "index")
    searcher = Searcher(tmp_path / "index", encoders["a"])
    weight = searcher.encoder.config.fingerprint_weight
    for graph in load_graphs(tiny_graphs)[:3]:
        unprobed = HideProbes(1.0)(graph, torch.Generator())  # as a foreign file of unknown activation
        best = searcher.search_graph(unprobed, k=1)[0]
        assert best.model_id == graph.model_id and best.score > weight
        assert searcher.search_graph(graph, k=1)[0].score == pytest.approx(1.0, abs=1e-4)


def test_a_lineage_search_finds_a_fine_tuned_childs_relatives_in_an_ivf_index(
    tiny_zoo, tiny_graphs, encoders, tmp_path, monkeypatch
):
    """Every fine-tuned child of the tiny zoo, its hidden neurons randomly permuted, rescaled and flipped as the
    evaluation does, queried by lineage: the best model outside its own run is its parent's run or a sibling for
    nearly all, the search over an IVF index visiting one list of three returns what a brute-force ranking of the
    stored vectors does, its first answers re-scored with the first layers the index stored, and an unknown relation
    is refused."""
    from raywse.core.artifacts import read_zoo_manifest
    from raywse.eval.symmetries import randomised_graphs
    from raywse.graph.first_layer_match import RERANK_DEPTH, first_layer_of, rerank, table_first_layers
    from raywse.index.faiss_index import IndexConfig

    monkeypatch.setattr(embed_mod, "embed_graphs", in_process_embed)
    build_index(tiny_graphs, encoders["a"], tmp_path / "index", IndexConfig(exact_threshold=10, nlist=3, nprobe=1))
    searcher = Searcher(tmp_path / "index", encoders["a"])
    assert searcher.index.kind == "ivf"
    table = index_embeddings(tmp_path / "index")
    ids, stored = table.column("model_id").to_pylist(), table_vectors(table)
    layers = table_first_layers(index_first_layers(tmp_path / "index"))
    assert set(layers) == set(ids)  # every tiny-zoo model has a first layer reading its inputs
    rows = read_zoo_manifest(tiny_zoo)
    run_of = {r["model_id"]: r.get("run_id") or r["model_id"] for r in rows}
    parent_of = {r["model_id"]: r.get("parent_id") or "" for r in rows}
    children = [r for r in rows if r.get("parent_id")]
    assert len(children) >= 10
    kin = []
    for row, graph in zip(children, randomised_graphs(tiny_zoo, children, seed=0), strict=True):
        found = searcher.search_graph(graph, k=len(ids), relation="lineage")
        query = encode(searcher.encoder, [graph], kinship=True).kinship[0]
        top = np.argsort(-(stored @ query))[: max(len(ids), RERANK_DEPTH)]  # k answers fetched, all re-scored
        rescored = rerank(first_layer_of(graph), [layers[ids[i]] for i in top], (stored @ query)[top])
        assert [n.model_id for n in found[:5]] == [ids[top[i]] for i in np.argsort(-rescored, kind="stable")[:5]]
        assert found[0].score <= 1.0 + 1e-4  # a cosine and a matched similarity, both at most 1
        best = next(n.model_id for n in found if run_of[n.model_id] != run_of[row["model_id"]])
        kin.append(run_of[best] == run_of[row["parent_id"]] or parent_of[best] == row["parent_id"])
    print(f"lineage search: best other-run model is kin for {np.mean(kin):.0%} of {len(children)} children")
    assert np.mean(kin) >= 0.9
    with pytest.raises(ValueError, match="unknown relation 'parent'"):
        searcher.search_graph(graph, relation="parent")
