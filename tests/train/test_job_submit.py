"""``ray start --head`` on loopback + ``ray job submit -- python jobs/train.py``: the cluster path, for real.

The test starts its own head (own temp dir and ports, in its own process group) and stops exactly that group."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from processes import stop_group

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def local_head():
    """A real Ray head on 127.0.0.1 with the dashboard (job submission needs it); yields the dashboard address."""
    gcs, dashboard, client, agent, metrics, agent_grpc, runtime_env = _free_ports(7)
    temp_dir = tempfile.mkdtemp(prefix="rw-", dir="/tmp")  # short: Ray's unix sockets live under it
    # The job's `python` must be this interpreter (the one with raywse's dependencies), as on a real cluster node.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
    cmd = [RAY, "start", "--head", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--metrics-export-port={metrics}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={runtime_env}", f"--temp-dir={temp_dir}", "--disable-usage-stats"]  # fmt: skip
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True)
            if probe.returncode == 0:
                break
            assert head.poll() is None, head.stdout.read().decode()[-2000:]
            time.sleep(2)
        else:
            pytest.fail("local Ray head did not come up in 90 s")
        yield address, env
    finally:
        stop_group(head)


def test_job_submit_trains_on_a_local_cluster(local_head, tiny_zoo, tiny_graphs, tmp_path):
    address, env = local_head
    out = tmp_path / "run"
    runtime_env = '{"excludes": [".venv", ".git", "runs", "bench/results", "*.egg-info"]}'
    submit = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            runtime_env,
            "--",
            "python",
            "jobs/train.py",
            "--zoo",
            str(tiny_zoo),
            "--graphs",
            str(tiny_graphs),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--encoder.depth",
            "1",
            "--encoder.hidden",
            "16",
            "--encoder.embed-dim",
            "16",
            "--contrastive.batch-tasks",
            "4",
            "--num-workers",
            "1",
        ],  # fmt: skip
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in (submit.stdout + submit.stderr).lower()
    assert (out / "encoder" / "encoder.pt").exists() and (out / "encoder" / "config.json").exists()
    assert list((out / "ray_results").rglob("checkpoint_*"))
