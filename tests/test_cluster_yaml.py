"""``cluster.yaml`` passes Ray's own autoscaler schema offline and describes the cluster raywse expects."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"


def raw_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared() -> dict:
    """What ``ray up`` validates: the file merged with the AWS defaults (raw validation trips on missing defaults)."""
    config = prepare_config(raw_config())
    validate_config(config)
    return config


def gpu_types(config: dict) -> dict[str, dict]:
    return {
        name: node
        for name, node in config["available_node_types"].items()
        if name != config["head_node_type"] and node["resources"].get("GPU", 0) > 0
    }


def test_schema_valid_and_shape(prepared):
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"]
    assert prepared["idle_timeout_minutes"] > 0
    image = prepared["docker"]["image"]
    assert image.startswith("rayproject/ray:") and "ray-ml" not in image
    assert image == f"rayproject/ray:{ray.__version__}-py311-gpu"  # the image's Ray matches the one we test against
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0


def test_gpu_worker_type(prepared):
    gpus = gpu_types(prepared)
    assert len(gpus) == 1, gpus
    (node,) = gpus.values()
    assert node["node_config"]["InstanceType"] == "p4d.24xlarge"  # 8x A100
    assert node["resources"] == {"CPU": 96, "GPU": 8}
    assert 0 <= node["min_workers"] <= node["max_workers"] <= prepared["max_workers"]
    assert node["max_workers"] >= 1


def test_setup_installs_raywse_on_head_and_workers(prepared):
    # the repo (where cluster.yaml lives) is shipped to ~/raywse and installed editable on every node
    assert prepared["file_mounts"]["~/raywse"] == "."
    assert (REPO / "pyproject.toml").exists()
    head, workers = prepared["head_setup_commands"], prepared["worker_setup_commands"]
    assert any('pip install -q -e "$HOME/raywse[cpu]"' in c for c in head)  # FAISS is an extra: CPU build here
    assert any("pip install -q -e ~/raywse" in c for c in workers)
    # prepare_config prepends the common setup_commands: both node kinds check the shared storage
    assert all(any("mountpoint -q /mnt/shared" in c for c in cmds) for cmds in (head, workers))
    # GPU FAISS only on the (GPU) workers, installed after any other FAISS build has been removed
    gpu_faiss = [i for i, c in enumerate(workers) if c.startswith("pip install -q faiss-gpu-cu12")]
    removal = [i for i, c in enumerate(workers) if "pip uninstall" in c and "faiss-cpu" in c]
    raywse = [i for i, c in enumerate(workers) if "-e ~/raywse" in c]
    assert gpu_faiss and removal and raywse[0] < removal[0] < gpu_faiss[0]
    assert not any("faiss-gpu" in c and "install" in c for c in head)


def test_shared_storage_is_mounted_and_exported(prepared):
    init = " ".join(prepared["initialization_commands"])
    assert "mount -t nfs4" in init and "/mnt/shared" in init
    options = prepared["docker"]["run_options"]
    assert "-v /mnt/shared:/mnt/shared" in options
    assert "--env RAYWSE_STORAGE=/mnt/shared/raywse" in options


def _typo_top(config: dict) -> None:
    config["idle_timeout_minute"] = config.pop("idle_timeout_minutes")


def _typo_node_type(config: dict) -> None:
    (name,) = gpu_types(config)
    config["available_node_types"][name]["min_worker"] = config["available_node_types"][name].pop("min_workers")


def _typo_docker(config: dict) -> None:
    config["docker"]["pull_befor_run"] = config["docker"].pop("pull_before_run")


@pytest.mark.parametrize("typo", [_typo_top, _typo_node_type, _typo_docker])
def test_typo_fails_schema(typo):
    config = copy.deepcopy(raw_config())
    typo(config)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties are not allowed"):
        validate_config(prepare_config(config))
