"""What every benchmark records about the machine it ran on (bench scripts import this from their own folder)."""

from __future__ import annotations

import os
import platform
import subprocess

import ray
import torch


def machine() -> dict:
    """CPU model and core count (``lscpu``), and the versions that matter for the figures."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
    }


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages (other jobs on the cores distort timings)."""
    return [round(x, 2) for x in os.getloadavg()]
