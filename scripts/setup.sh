#!/usr/bin/env bash
# Create .venv and install raywse with everything it needs (idempotent; safe to rerun).
# On a machine without an NVIDIA GPU, torch is pinned to 2.13.0 so pip takes the CPU wheel instead of the
# default CUDA build (gigabytes). With an NVIDIA GPU, the default CUDA torch and the GPU build of FAISS that has code
# for that GPU (scripts/faiss_build.sh picks it; Hopper gets faiss-gpu-cu12-cuvs) are installed instead.
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
faiss_extra=$(bash scripts/faiss_build.sh)
# one FAISS distribution per environment: drop the others if an earlier run installed a different build
for dist in faiss-cpu faiss-gpu-cu12 faiss-gpu-cu12-cuvs; do
  case "$faiss_extra:$dist" in
    cpu:faiss-cpu | gpu:faiss-gpu-cu12-cuvs | gpu-sm70:faiss-gpu-cu12) ;;
    *) if python -m pip show -q "$dist" >/dev/null 2>&1; then python -m pip uninstall -q -y "$dist"; fi ;;
  esac
done
echo "raywse set-up: FAISS build '$faiss_extra'"
python -m pip install -q -e ".[dev,$faiss_extra]"
