#!/usr/bin/env bash
# Print the raywse extra that brings the FAISS build for this machine's GPU (scripts/setup.sh installs it):
#   gpu          faiss-gpu-cu12-cuvs: native code for compute capability 7.5-9.0 (Turing .. Hopper, H100 included);
#                PyPI has it for CPython 3.12 on glibc >= 2.39 only
#   gpu-classic  faiss-gpu-cu12: compute capability 7.0-8.9 (Volta .. Ada), CPython 3.10-3.13, glibc >= 2.17
#   cpu          faiss-cpu: no NVIDIA GPU, one too old or too new for both GPU builds, or a Hopper GPU where the
#                cuVS build cannot be installed (another Python or an older glibc)
# Exactly one FAISS distribution may be installed: all three provide the module `faiss`. `python` is the
# environment being set up (scripts/setup.sh runs this inside its .venv).
set -euo pipefail
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | sort -V | head -1 || true)
if [ -z "$cap" ]; then echo cpu; exit 0; fi
if ! [[ "$cap" =~ ^([0-9]+)\.([0-9]+)$ ]]; then
  echo "faiss_build: unreadable compute capability '$cap'; using the CPU build" >&2
  echo cpu; exit 0
fi
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}
read -r py glibc < <(python -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.libc_ver()[1] or 0)' \
  2>/dev/null || echo "? 0")
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }
cuvs_wheel=no
if [ "$py" = "3.12" ] && at_least "$glibc" 2.39; then cuvs_wheel=yes; fi
cc=$((major * 10 + minor))
if [ "$cc" -ge 100 ]; then
  # no FAISS GPU wheel on PyPI lists native code past sm_90 (Blackwell is 10.x/12.x): do not guess
  echo "faiss_build: compute capability $cap is newer than any PyPI FAISS GPU build lists; using the CPU build" >&2
  echo cpu
elif [ "$cc" -ge 75 ] && [ $cuvs_wheel = yes ]; then
  echo gpu
elif [ "$cc" -ge 70 ] && [ "$cc" -lt 90 ]; then
  echo gpu-classic
elif [ "$cc" -ge 90 ]; then
  echo "faiss_build: the FAISS build with code for compute capability $cap (faiss-gpu-cu12-cuvs) needs CPython 3.12" \
    "and glibc >= 2.39, this environment has Python $py and glibc $glibc; using the CPU build" \
    "(for GPU FAISS, rerun with PYTHON=python3.12 on such a system, or build it: docs/faiss_gpu.md)" >&2
  echo cpu
else
  echo cpu
fi
