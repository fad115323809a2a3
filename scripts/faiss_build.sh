#!/usr/bin/env bash
# Print the raywse extra that brings the FAISS build for this machine's GPU (scripts/setup.sh installs it):
#   gpu     faiss-gpu-cu12-cuvs: native code for compute capability 7.5-9.0 (Turing .. Hopper, H100 included)
#   gpu-sm70  faiss-gpu-cu12: compute capability 7.0-8.9 (for Volta, which the cuVS build lacks)
#   cpu     faiss-cpu: no NVIDIA GPU, or one too old for either GPU build
# Exactly one FAISS distribution may be installed: all three provide the module `faiss`.
set -euo pipefail
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -V | head -1 || true)
if [ -z "$cap" ]; then echo cpu; exit 0; fi
major=${cap%%.*}
minor=${cap#*.}
if [ "$major" -gt 7 ] || { [ "$major" -eq 7 ] && [ "$minor" -ge 5 ]; }; then
  echo gpu
elif [ "$major" -eq 7 ]; then
  echo gpu-sm70
else
  echo cpu
fi
