"""Ray Data graphify on a real zoo plus a corpus of broken checkpoints."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file

from raywse.core.artifacts import GraphFiles, ZooFiles
from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec, SpecError
from raywse.data.graphify import GraphifyConfig, graphify, graphify_batch, load_graphs, probe_sources
from raywse.graph.arrow import table_to_graphs
from raywse.graph.neural_graph import graph_size
from raywse.graph.probe_inference import CANDIDATE_ACTIVATIONS
from raywse.graph.probes import INFERRED

CONFIG = GraphifyConfig(batch_size=16, progress=False)


def _zoo_rows(zoo: Path) -> list[dict]:
    return pq.read_table(zoo / ZooFiles.MANIFEST).to_pylist()


def _fault_corpus(zoo: Path, bad_dir: Path) -> dict[str, str]:
    """Write one broken checkpoint per failure mode; returns file name -> expected error stage."""
    bad_dir.mkdir()
    good = zoo / _zoo_rows(zoo)[0]["path"]
    tensors, meta = load_checkpoint(good)
    data = good.read_bytes()
    (bad_dir / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    header = (16).to_bytes(8, "little") + b"{not json at all"  # declares 16 header bytes that are not JSON
    (bad_dir / "corrupt_header.safetensors").write_bytes(header + data[24:])
    nan = {k: v.clone() for k, v in tensors.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    save_file(nan, str(bad_dir / "nan_weights.safetensors"), metadata=meta)
    inf = {k: v.clone() for k, v in tensors.items()}
    next(iter(inf.values())).view(-1)[0] = float("inf")
    save_file(inf, str(bad_dir / "inf_weights.safetensors"), metadata=meta)
    ints = {k: (v * 100).to(torch.int32) for k, v in tensors.items()}
    save_file(ints, str(bad_dir / "wrong_dtype.safetensors"), metadata=meta)
    unsupported = {"prelu.weight": torch.ones(8), "fc.weight": torch.randn(4, 8), "fc.bias": torch.zeros(4),
                   "attn.qkv": torch.randn(3, 8, 8)}  # fmt: skip
    save_file(unsupported, str(bad_dir / "unsupported_layer.safetensors"))
    shape_lie = dict(tensors)
    first = next(iter(shape_lie))
    shape_lie[first] = torch.randn(*[d + 1 for d in shape_lie[first].shape])
    save_file(shape_lie, str(bad_dir / "spec_mismatch.safetensors"), metadata=meta)
    torch.save(tensors, bad_dir / "pickled.pt")
    return {
        "truncated": "read",
        "corrupt_header": "read",
        "nan_weights": "validate",
        "inf_weights": "validate",
        "wrong_dtype": "validate",
        "unsupported_layer": "spec",
        "spec_mismatch": "validate",
        "pickled": "read",
        "missing": "read",
    }


def test_zoo_graphs_match_architecture(tiny_zoo, tiny_graphs):
    rows = {r["model_id"]: r for r in _zoo_rows(tiny_zoo)}
    graphs = load_graphs(tiny_graphs)
    assert sorted(g.model_id for g in graphs) == sorted(rows)
    for g in graphs:
        tensors, _ = load_checkpoint(tiny_zoo / rows[g.model_id]["path"])
        nodes, edges = graph_size(ArchSpec.from_json(rows[g.model_id]["layer_spec"]), tensors)
        assert (g.num_nodes, g.edge_index.shape[1]) == (nodes, edges), g.model_id


def test_fault_corpus_reported_row_by_row_and_good_files_kept(tiny_zoo, tmp_path):
    expected = _fault_corpus(tiny_zoo, tmp_path / "bad")
    good = [tiny_zoo / r["path"] for r in _zoo_rows(tiny_zoo)[:20]]
    bad = sorted((tmp_path / "bad").iterdir()) + [tmp_path / "bad" / "missing.safetensors"]
    result = graphify([*good, *bad], tmp_path / "out", CONFIG)

    errors = {Path(e.path).stem: e for e in result.errors}
    assert set(errors) == set(expected), errors
    for name, stage in expected.items():
        assert errors[name].stage == stage, (name, errors[name])
        assert errors[name].reason and "\n" not in errors[name].reason
    assert "not found" in errors["missing"].reason
    assert "NaN" in errors["nan_weights"].reason
    assert result.written == len(good)
    table = pq.read_table(tmp_path / "out" / GraphFiles.ERRORS)
    assert sorted(Path(p).stem for p in table.column("path").to_pylist()) == sorted(expected)
    assert sorted(g.model_id for g in load_graphs(tmp_path / "out")) == sorted(p.stem for p in good)


def test_rerun_is_idempotent_and_resumes_after_interruption(tiny_zoo, tmp_path):
    out = tmp_path / "graphs"
    first = graphify(tiny_zoo, out, CONFIG)
    shards = sorted((out / "shards").glob("shard-*.parquet"))
    mtimes = {p: p.stat().st_mtime_ns for p in shards}
    manifest = pq.read_table(out / GraphFiles.MANIFEST).sort_by("model_id")

    second = graphify(tiny_zoo, out, CONFIG)
    assert (second.written, second.skipped, second.total) == (0, first.total, first.total)
    assert {p: p.stat().st_mtime_ns for p in sorted((out / "shards").glob("shard-*.parquet"))} == mtimes
    assert pq.read_table(out / GraphFiles.MANIFEST).sort_by("model_id").equals(manifest)

    # An interrupted run: one shard never finished (only its temp file exists), so its models are redone.
    lost = shards[0]
    lost_ids = set(pq.read_table(lost, columns=["model_id"]).column("model_id").to_pylist())
    shutil.move(lost, out / "shards" / f".{lost.name}.abc.tmp")
    third = graphify(tiny_zoo, out, CONFIG)
    assert third.written == len(lost_ids)
    assert third.total == first.total
    assert sorted(g.model_id for g in load_graphs(out)) == sorted(manifest.column("model_id").to_pylist())


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such zoo manifest"):
        graphify(tmp_path / "nope", tmp_path / "out", CONFIG)
    assert not os.path.exists(tmp_path / "out" / GraphFiles.MANIFEST)


def test_probes_per_checkpoint_zoo_dataset_metadata_file_or_gaussian(tiny_zoo, tmp_path):
    """Zoo models are probed on their dataset; a loose file naming a zoo task on that task's dataset; a file without
    one on the user's probe file when its input size matches, else on the zoo's probe set it answers most
    informatively (its own dataset's rows), or, inference off, on Gaussian probes (said per graph)."""
    rows = _zoo_rows(tiny_zoo)
    graphs = load_graphs(graphify(tiny_zoo, tmp_path / "zoo", CONFIG).out_dir)
    by_id = {g.model_id: g for g in graphs}
    assert all(by_id[r["model_id"]].probe_source == f"train:{r['dataset']}|{r['input_norm']}" for r in rows)

    row = next(r for r in rows if r["family"] == "mlp")
    tensors, meta = load_checkpoint(tiny_zoo / row["path"])
    loose = tmp_path / "loose"
    loose.mkdir()
    save_file(tensors, str(loose / "named.safetensors"), metadata=meta)  # keeps its task metadata
    save_file(tensors, str(loose / "plain.safetensors"), metadata={"layer_spec": meta["layer_spec"]})
    size = ArchSpec.from_json(row["layer_spec"]).input_shape[0]
    np.save(tmp_path / "mine.npy", np.random.default_rng(0).random((70, size), dtype=np.float32))
    batch = pd.DataFrame([{"path": str(loose / f"{n}.safetensors"), "model_id": n, "layer_spec": "", "dataset": "",
                           "input_norm": ""} for n in ("named", "plain")])  # fmt: skip
    out = tmp_path / "mine"
    cases = (("file", str(tmp_path / "mine.npy"), True, "file:mine.npy"), ("inferred", "", True,
             f"train:{row['dataset']}|"), ("gaussian", "", False, f"gaussian:{size}"))  # fmt: skip
    for name, probe_data, infer, expected in cases:
        status = graphify_batch(batch, str(out / name), probe_data, infer_probes=infer)
        assert (status["status"] == "ok").all()
        made = {g.model_id: g for g in table_to_graphs(pq.read_table(next((out / name).rglob("*.parquet"))))}
        assert made["named"].probe_source == by_id[row["model_id"]].probe_source
        assert made["plain"].probe_source.startswith(expected)
        assert (INFERRED in made["plain"].probe_source) == (name == "inferred")


def test_a_spec_file_describes_foreign_checkpoints_that_names_cannot(tmp_path):
    """silero-vad (names do not order its layers) is an error row without ``--spec`` and a graph with it; the spec is
    that of every file without one; a spec file that does not parse fails before any work, naming the file."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1]))
    from packaged import SILERO_SPEC, SILERO_VAD, package_file

    source = tmp_path / "foreign"
    source.mkdir()
    shutil.copy(package_file(*SILERO_VAD), source / "vad.safetensors")
    save_file({"layers.0.weight": torch.randn(3, 4), "layers.0.bias": torch.zeros(3)}, source / "mlp.safetensors")
    quiet = GraphifyConfig(progress=False)
    plain = graphify(source, tmp_path / "plain", quiet)
    assert plain.written == 1 and [(e.model_id, e.stage) for e in plain.errors] == [("vad", "spec")]
    described = graphify(source, tmp_path / "described", GraphifyConfig(progress=False, spec=str(SILERO_SPEC)))
    # the spec is every spec-less file's: the MLP does not fit it, and says so
    assert described.written == 1 and [(e.model_id, e.stage) for e in described.errors] == [("mlp", "validate")]
    assert described.errors[0].reason.startswith("missing tensors: conv1.bias")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="spec file .*broken.json: malformed layer spec"):
        graphify(source, tmp_path / "broken", GraphifyConfig(progress=False, spec=str(tmp_path / "broken.json")))
    assert not (tmp_path / "broken").exists()


def test_a_stated_activation_lets_inferred_chains_run_on_probes(tmp_path):
    """Files without a spec are probed on an inferred probe set with an inferred activation (or, inference off, not
    at all), or with ``--activation``; an activation raywse cannot evaluate fails before any work."""
    source = tmp_path / "foreign"
    source.mkdir()
    tensors = {"net.0.weight": torch.randn(8, 4), "net.0.bias": torch.zeros(8), "net.2.weight": torch.randn(3, 8),
               "net.2.bias": torch.zeros(3)}  # fmt: skip
    save_file(tensors, source / "mlp.safetensors")
    quiet = GraphifyConfig(progress=False, infer_probes=False)
    bare = load_graphs(graphify(source, tmp_path / "bare", quiet).out_dir)[0]
    tanh = dataclasses.replace(quiet, activation="tanh")
    stated = load_graphs(graphify(source, tmp_path / "stated", tanh).out_dir)[0]
    assert bare.probe_source == "none" and stated.probe_source == "gaussian:4" and stated.probe_act.abs().sum() > 0
    inferred = load_graphs(graphify(source, tmp_path / "inferred", GraphifyConfig(progress=False)).out_dir)[0]
    source_rows, _, activation = inferred.probe_source.partition(INFERRED)
    assert source_rows.startswith("train:iris|") and activation.strip() in CANDIDATE_ACTIVATIONS  # 4 inputs: iris
    assert probe_sources(tmp_path / "inferred") == f"{inferred.probe_source} 1"  # what `raywse graphify` prints
    assert probe_sources(tmp_path / "bare") == "none 1" and probe_sources(tmp_path / "nothing") == ""
    with pytest.raises(SpecError, match="unsupported activation hint 'swish'"):
        graphify(source, tmp_path / "bad", dataclasses.replace(quiet, activation="swish"))
    assert not (tmp_path / "bad").exists()
