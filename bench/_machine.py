"""What every benchmark records about the machine it ran on (bench scripts import this from their own folder)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import datetime
from pathlib import Path

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


def save_results(path: Path, results: dict, load_before: list[float], **context: object) -> None:
    """Write ``results`` as JSON to ``path`` with ``context`` (e.g. the run measured), the machine, the load before
    and after, and the date; print where."""
    results |= {**context, "machine": machine(), "load_before": load_before, "load_after": load()}
    results["date"] = datetime.now().isoformat(timespec="seconds")
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"-> {path}")


def run_argument(doc: str) -> Path:
    """The ``--run`` option (a main-job output directory) of a benchmark whose module docstring is ``doc``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--run", required=True, type=Path, help="a main-job output directory")
    return parser.parse_args().run
