"""The set-up picks the FAISS build that has code for the GPU at hand (``scripts/faiss_build.sh``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def faiss_extra(tmp_path: Path, compute_caps: list[str] | None, python: str = "3.12 2.39") -> str:
    """The script's answer on a machine whose ``nvidia-smi`` reports ``compute_caps`` (None: no nvidia-smi) and
    whose ``python`` is the given "version glibc" (the set-up's venv Python)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.unlink(missing_ok=True)
    if compute_caps is not None:
        smi.write_text("#!/bin/sh\n" + "".join(f"echo {c}\n" for c in compute_caps))
        smi.chmod(0o755)
    (bin_dir / "python").write_text(f"#!/bin/sh\necho {python}\n")
    (bin_dir / "python").chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    script = REPO / "scripts" / "faiss_build.sh"
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize(
    ("caps", "python", "extra"),
    [
        (None, "3.12 2.39", "cpu"),
        (["9.0"], "3.12 2.39", "gpu"),  # H100 / H200: the cuVS build has sm_90 code; faiss-gpu-cu12 has not
        (["8.0", "8.0"], "3.12 2.39", "gpu"),  # A100
        (["7.5"], "3.12 2.41", "gpu"),
        (["7.0"], "3.12 2.39", "gpu-classic"),  # V100: only faiss-gpu-cu12
        (["9.0", "7.0"], "3.12 2.39", "gpu-classic"),  # the oldest GPU decides
        (["9.0"], "3.11 2.39", "cpu"),  # the cuVS build is published for CPython 3.12 only ...
        (["9.0"], "3.12 2.36", "cpu"),  # ... on glibc >= 2.39 (Debian 12 has 2.36)
        (["8.6"], "3.11 2.36", "gpu-classic"),  # Ampere without the cuVS build: the classic one has its code
        (["6.1"], "3.12 2.39", "cpu"),
        (["10.0"], "3.12 2.39", "cpu"),  # Blackwell: no PyPI FAISS GPU build lists its code
        (["N/A"], "3.12 2.39", "cpu"),
    ],
)
def test_faiss_build_matches_the_gpu_and_the_python(tmp_path, caps, python, extra):
    assert faiss_extra(tmp_path, caps, python) == extra


def test_every_build_the_script_names_is_an_extra_of_the_package():
    text = (REPO / "pyproject.toml").read_text()
    for extra, dist in (("cpu", "faiss-cpu"), ("gpu", "faiss-gpu-cu12-cuvs"), ("gpu-classic", "faiss-gpu-cu12")):
        assert f'{extra} = ["{dist}' in text, extra
