"""The real search service (``raywse serve``: Ray Serve over loopback HTTP), every route and every bad upload."""

from __future__ import annotations

import importlib
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from processes import stop_group
from safetensors.torch import save

import raywse.index.embed as embed_mod
from raywse.core.io import load_checkpoint
from raywse.data.graphify import shard_paths
from raywse.graph.probes import INFERRED
from raywse.index.embed import EmbedActor, build_index
from raywse.models.checkpoint import export_encoder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

MAX_UPLOAD_MB = 1
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, data: bytes | None = None) -> tuple[int, dict]:
    """``(status, json body)`` of a GET (``data`` None) or a POST of raw bytes."""
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def served_files(tiny_graphs, tmp_path_factory):
    """An encoder and the index it built of the tiny zoo (embedded in-process): what the service loads."""
    root = tmp_path_factory.mktemp("serve")
    config = EncoderConfig(depth=1, hidden=16, embed_dim=8)
    export_encoder(NeuralGraphEncoder(config).state_dict(), config, root / "encoder")
    patch = pytest.MonkeyPatch()
    patch.setattr(embed_mod, "embed_graphs", lambda graphs_dir, encoder_dir, model_ids=None, **_: EmbedActor(
        str(encoder_dir))(pq.read_table(shard_paths(graphs_dir))))  # fmt: skip
    build_index(tiny_graphs, root / "encoder", root / "index")
    patch.undo()
    return root


@pytest.fixture(scope="module")
def service(tiny_zoo, tiny_foreign, served_files):
    """``raywse serve`` in its own process group on a free loopback port; yields its URL."""
    root = served_files
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "raywse.cli",
        "serve",
        "--index",
        str(root / "index"),
        "--encoder",
        str(root / "encoder"),
        "--zoo",
        str(tiny_zoo),
        "--port",
        str(port),
        "--max-upload-mb",
        str(MAX_UPLOAD_MB),
        "--index-root",
        str(tiny_foreign),
        "--index-root",
        str(root / "uploads"),
    ]
    (root / "uploads").mkdir()
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    log = open(root / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, (root / "serve.log").read_text()[-3000:]
            try:
                if request(f"{url}/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                pass
            time.sleep(2)
        else:
            pytest.fail("the search service did not come up in 120 s:\n" + (root / "serve.log").read_text()[-3000:])
        yield url
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends: the service must stop by itself
        proc.wait(timeout=60)
        assert proc.returncode == 0, (root / "serve.log").read_text()[-3000:]
    finally:
        stop_group(proc)  # whatever is left (nothing, when Ctrl-C worked)
        log.close()


def test_search_finds_an_indexed_checkpoint_first_with_its_metadata(service, tiny_zoo):
    record = pq.read_table(tiny_zoo / "manifest.parquet").to_pylist()[0]
    status, body = request(f"{service}/search?k=3", (tiny_zoo / record["path"]).read_bytes())
    assert status == 200, body
    first = body["neighbours"][0]
    assert [n["rank"] for n in body["neighbours"]] == [1, 2, 3]
    assert first["model_id"] == record["model_id"] and abs(first["score"] - 1.0) < 1e-4
    assert (first["task"], first["family"]) == (record["task"], record["family"])
    assert body["probe_source"] == f"train:{record['dataset']}|{record['input_norm']}"
    assert body["took_ms"] > 0 and body["encoder_version"]
    status, body = request(f"{service}/search?k=3&relation=lineage", (tiny_zoo / record["path"]).read_bytes())
    assert status == 200, body
    assert body["neighbours"][0]["model_id"] == record["model_id"]  # its own first-layer sketch
    assert abs(body["neighbours"][0]["score"] - 1.0) < 1e-4


def test_every_bad_upload_is_a_one_line_4xx_and_the_service_stays_up(service, tiny_zoo):
    record = pq.read_table(tiny_zoo / "manifest.parquet").to_pylist()[0]
    good = (tiny_zoo / record["path"]).read_bytes()
    tensors, meta = load_checkpoint(tiny_zoo / record["path"])
    nan = {k: v.clone() for k, v in tensors.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    unsupported = {"prelu.weight": torch.ones(8), "attn.qkv": torch.randn(3, 8, 8)}
    cases = {
        "empty": (b"", 400),
        "truncated": (good[: len(good) // 2], 400),
        "not safetensors": (b"hello world, certainly not a checkpoint", 400),
        "pickle": (pickle.dumps({"w": [1.0, 2.0]}), 400),
        "NaN weights": (save(nan, metadata=meta), 422),
        "unsupported layers": (save(unsupported), 422),
        "oversize": (good + b"\0" * (MAX_UPLOAD_MB * 2**20), 413),
    }
    for name, (data, expected) in cases.items():
        status, body = request(f"{service}/search", data)
        assert status == expected, (name, status, body)
        assert set(body) == {"error"} and body["error"] and "\n" not in body["error"], (name, body)
    assert request(f"{service}/search?k=zero", good)[0] == 400
    assert request(f"{service}/search?k=0", good)[0] == 400
    status, body = request(f"{service}/search?relation=parent", good)
    assert status == 400 and "unknown relation 'parent'" in body["error"], body
    assert request(f"{service}/nowhere")[0] == 404
    status, body = request(f"{service}/healthz")
    assert status == 200 and body["status"] == "ok" and body["indexed"] > 0


def test_post_index_adds_checkpoints_that_the_next_search_finds(service, tiny_foreign, served_files, tmp_path):
    sources = sorted((tiny_foreign / "checkpoints").glob("*.safetensors"))[:2]
    corrupt = served_files / "uploads" / "corrupt.safetensors"  # under an index root
    corrupt.write_bytes(sources[0].read_bytes()[:100])
    outside = tmp_path / "elsewhere.safetensors"  # a real checkpoint, but outside every index root
    outside.write_bytes(sources[0].read_bytes())
    paths = [str(p) for p in sources] + [str(corrupt), str(served_files / "uploads" / "missing.safetensors"),
                                         str(outside), "relative/path.safetensors"]  # fmt: skip
    before = request(f"{service}/healthz")[1]["indexed"]
    status, body = request(f"{service}/index", json.dumps({"paths": paths}).encode())
    assert status == 200, body
    assert body["added"] == [p.stem for p in sources] and body["indexed"] == before + 2
    assert sorted(e["path"] for e in body["errors"]) == sorted(paths[2:]), body["errors"]
    reasons = {e["path"]: e["reason"] for e in body["errors"]}
    assert "outside" in reasons[str(outside)] and "absolute" in reasons["relative/path.safetensors"]
    assert request(f"{service}/healthz")[1]["indexed"] == before + 2
    status, found = request(f"{service}/search?k=1", sources[1].read_bytes())
    assert status == 200 and found["neighbours"][0]["model_id"] == sources[1].stem
    assert abs(found["neighbours"][0]["score"] - 1.0) < 1e-4  # indexed and searched on the same inferred probes
    assert found["probe_source"].startswith("train:") and INFERRED in found["probe_source"], found["probe_source"]
    stated = request(f"{service}/search?k=1&activation=relu", sources[1].read_bytes())[1]  # only the probes inferred
    assert stated["probe_source"].startswith("train:") and stated["probe_source"].endswith(INFERRED)
    status, body = request(f"{service}/search?activation=swish", sources[1].read_bytes())
    assert status == 422 and "unsupported activation hint 'swish'" in body["error"]
    status, again = request(f"{service}/index", json.dumps({"paths": paths[:1]}).encode())
    assert status == 200 and again["added"] == [] and "already in the index" in again["errors"][0]["reason"]
    for bad in (b"not json", b"{}", json.dumps({"paths": []}).encode(), json.dumps({"paths": "x"}).encode(),
                json.dumps({"paths": paths[:2], "ids": ["same", "same"]}).encode()):  # fmt: skip
        status, body = request(f"{service}/index", bad)
        assert status == 400 and set(body) == {"error"} and "\n" not in body["error"], (bad, body)


def test_load_500_requests_from_8_clients_without_an_error(service, tiny_zoo):
    rows = pq.read_table(tiny_zoo / "manifest.parquet").to_pylist()[:8]
    uploads = [(tiny_zoo / r["path"]).read_bytes() for r in rows]
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda i: request(f"{service}/search?k=5", uploads[i % 8])[0], range(500)))
    seconds = time.perf_counter() - start
    print(f"500 searches from 8 clients in {seconds:.1f} s ({500 / seconds:.0f}/s)")
    assert statuses == [200] * 500
    assert request(f"{service}/healthz")[0] == 200


def test_a_missing_index_is_a_one_line_error_before_anything_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "raywse.cli", "serve", "--index", str(tmp_path / "none"), "--encoder", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "index directory not found" in proc.stderr


def test_the_serve_deploy_config_passes_serves_schema_and_builds_the_application(served_files, tiny_zoo):
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    from raywse.serve.app import build_app

    config = yaml.safe_load((REPO / "deploy" / "serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks
    (app,) = config["applications"]
    module, name = app["import_path"].split(":")
    assert getattr(importlib.import_module(module), name) is build_app
    args = app["args"] | {"index_dir": str(served_files / "index"), "encoder_dir": str(served_files / "encoder"),
                          "zoo_dir": str(tiny_zoo), "index_roots": [str(served_files / "uploads")]}  # fmt: skip
    assert isinstance(build_app(args), Application)
    assert app["deployments"][0]["autoscaling_config"]["max_replicas"] > 1
    with pytest.raises(FileNotFoundError, match="index directory not found"):
        build_app(args | {"index_dir": str(served_files / "nowhere")})
    with pytest.raises(ValueError, match="unknown args .*replicas"):
        build_app(args | {"replicas": 2})
