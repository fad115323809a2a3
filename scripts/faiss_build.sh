#!/usr/bin/env bash
# Print the raywse extra that brings the FAISS build for this machine's GPU (scripts/setup.sh installs it):
#   gpu     faiss-gpu-cu12-cuvs: native code for compute capability 7.5-9.0 (Turing .. Hopper, H100 included)
#   gpu-sm70  faiss-gpu-cu12: compute capability 7.0-8.9 (for Volta, which the cuVS build lacks)
#   cpu     faiss-cpu: no NVIDIA GPU, one too old for either GPU build, or one newer than both list (10.x+)
# Exactly one FAISS distribution may be installed: all three provide the module `faiss`.
set -euo pipefail
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -V | head -1 || true)
if [ -z "$cap" ]; then echo cpu; exit 0; fi
if ! [[ "$cap" =~ ^([0-9]+)\.([0-9]+)$ ]]; then
  echo "faiss_build: unreadable compute capability '$cap'; using the CPU build" >&2
  echo cpu; exit 0
fi
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}
if [ "$major" -ge 10 ]; then
  # no FAISS GPU wheel on PyPI lists native code past sm_90 (Blackwell is 10.x/12.x): do not guess
  echo "faiss_build: compute capability $cap is newer than any PyPI FAISS GPU build lists; using the CPU build" >&2
  echo cpu
elif [ "$major" -gt 7 ] || { [ "$major" -eq 7 ] && [ "$minor" -ge 5 ]; }; then
  echo gpu
elif [ "$major" -eq 7 ]; then
  echo gpu-sm70
else
  echo cpu
fi
