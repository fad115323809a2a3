#!/usr/bin/env bash
# Create .venv and install raywse with everything it needs (idempotent; safe to rerun).
# On a machine without an NVIDIA GPU, torch is pinned to 2.13.0 so pip takes the CPU wheel instead of the
# default CUDA build (gigabytes). With an NVIDIA GPU, the default CUDA torch and the GPU build of FAISS that has code
# for that GPU and this Python (scripts/faiss_build.sh picks it and says why) are installed instead.
# pip's own output goes to .venv/setup.log; a failing step prints the end of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
log=.venv/setup.log
: >"$log"
pip_quiet() {
  if ! python -m pip "$@" >>"$log" 2>&1; then
    echo "raywse set-up: 'pip $*' failed; the end of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}
pip_quiet install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  python -c "import torch" 2>/dev/null || pip_quiet install -q torch
else
  python -c "import torch" 2>/dev/null || pip_quiet install -q torch==2.13.0
fi
faiss_extra=$(bash scripts/faiss_build.sh)
# one FAISS distribution per environment: drop the others if an earlier run installed a different build
for dist in faiss-cpu faiss-gpu-cu12 faiss-gpu-cu12-cuvs; do
  case "$faiss_extra:$dist" in
    cpu:faiss-cpu | gpu:faiss-gpu-cu12-cuvs | gpu-classic:faiss-gpu-cu12) ;;
    *) if python -m pip show -q "$dist" >/dev/null 2>&1; then pip_quiet uninstall -q -y "$dist"; fi ;;
  esac
done
pip_quiet install -q -e ".[dev,$faiss_extra]"
echo "raywse set-up: .venv ready (torch $(python -c 'import torch; print(torch.__version__)'), FAISS build" \
  "'$faiss_extra'; pip's log: $log)"
