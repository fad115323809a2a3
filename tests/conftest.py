"""Shared fixtures: one local Ray for the whole session and one real tiny zoo, graphified once."""

from __future__ import annotations

import os
import tempfile

import pytest
import ray

os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "20")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Probe sets are cached on disk; the suite (and the Ray workers it starts) keep theirs out of the user's cache, in a
# directory removed when the session ends.
_CACHE = tempfile.TemporaryDirectory(prefix="raywse-test-cache-")
os.environ.setdefault("RAYWSE_CACHE_DIR", _CACHE.name)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs), started once; shut down at the end of the session."""
    from raywse.core.ray_session import ensure_ray

    ensure_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_zoo(ray_local, tmp_path_factory):
    """A real zoo of tiny networks trained on bundled datasets (the ``tiny`` preset); returns the zoo dir."""
    from raywse.zoo.build import build_zoo
    from raywse.zoo.plan import ZooConfig

    out = tmp_path_factory.mktemp("zoo")
    build_zoo(ZooConfig.tiny(), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_graphs(tiny_zoo, tmp_path_factory):
    """The tiny zoo graphified with Ray Data; returns the graphs dir."""
    from raywse.data.graphify import GraphifyConfig, graphify

    out = tmp_path_factory.mktemp("graphs")
    result = graphify(tiny_zoo, out, GraphifyConfig(batch_size=16, progress=False))
    assert not result.errors, result.errors
    return out


@pytest.fixture(scope="session")
def tiny_foreign(tmp_path_factory):
    """A small foreign zoo written by ``foreign/train_foreign.py`` (plain PyTorch, no raywse), with its ``probes.npz``
    of the zoo's probe inputs; returns its dir."""
    import subprocess
    import sys
    from pathlib import Path

    from raywse.core.artifacts import ForeignFiles
    from raywse.zoo.datasets import write_zoo_probes

    out = tmp_path_factory.mktemp("foreign")
    script = Path(__file__).parents[1] / "foreign" / "train_foreign.py"
    zoo_probes = write_zoo_probes(out / ForeignFiles.ZOO_PROBES)  # as the main job hands them over
    cmd = [sys.executable, str(script), "--out", str(out), "--models-per-task", "4", "--zoo-probes", str(zoo_probes)]
    subprocess.run(cmd, check=True)
    return out


@pytest.fixture(scope="session")
def demo_plan_rows() -> list[dict]:
    """Manifest-like rows (what splits and the evaluation read) of every model the demo preset plans; no training."""
    import json

    from raywse.zoo.datasets import get_task, load_task
    from raywse.zoo.plan import ZooConfig, plan_zoo

    rows = []
    for group in plan_zoo(ZooConfig.small()):
        for run in group.runs:
            spec = group.arch.spec(load_task(run.task).input_shape_for(group.arch.family)).to_json()
            for model_id in group.model_ids(run):
                rows.append({"model_id": model_id, "task": run.task, "run_id": run.run_id, "layer_spec": spec,
                             "hparams": json.dumps(group.hparams(run)), "num_classes": get_task(run.task).num_classes,
                             "family": group.arch.family, "parent_id": run.parent_id})  # fmt: skip
    return rows
