#!/usr/bin/env bash
# Create .venv and install raywse with everything it needs (idempotent; safe to rerun).
# On a machine without an NVIDIA GPU, torch is pinned to 2.13.0 so pip takes the CPU wheel instead of the
# default CUDA build (gigabytes). With a GPU, the default CUDA torch and the GPU build of FAISS are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  python -c "import torch" 2>/dev/null || python -m pip install -q torch
else
  python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
fi
python -m pip install -q -e ".[dev]"
