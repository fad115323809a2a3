#!/bin/bash
# One call on a lent GPU machine, carrying .device/faiss_gpu_sm90.tar.xz: FAISS 1.15.0 built from source here for
# sm_90 against CUDA 13 (bench/README.md, "GPU FAISS" says how), since every PyPI GPU build needs CUDA 12 libraries
# the machine lacks. Unpacks it to /tmp/faiss_gpu_sm90 (left there for bench/gpu_check.sh in the next call on the same
# warm machine), then FAISS's own GPU smoke test, the index tests on the GPU, and GPU vs CPU FAISS side by side through
# raywse's index. None of it needs Ray. Everything lands in $OUT (default /tmp/gpu_faiss_check).
OUT=${OUT:-/tmp/gpu_faiss_check}; mkdir -p "$OUT"
failed=0
export PYTHONUNBUFFERED=1
T0=$(date +%s)
rm -rf /tmp/faiss_gpu_sm90 && tar -xJf .device/faiss_gpu_sm90.tar.xz -C /tmp || exit 3
export PYTHONPATH=/tmp/faiss_gpu_sm90:$PWD
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; uptime;
  python3 -c "import sys,faiss,torch;print(sys.version);print('faiss',faiss.__version__,faiss.__file__,'gpus',faiss.get_num_gpus(),'torch',torch.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
echo "unpacked at +$(( $(date +%s)-T0 ))s"
timeout 60 python3 /tmp/faiss_gpu_sm90/gpu_smoke.py > "$OUT/smoke.txt" 2>&1 || failed=1
tail -8 "$OUT/smoke.txt"
timeout 120 python3 -m pytest -q -p no:cacheprovider --noconftest tests/index/test_faiss_gpu.py tests/index/test_faiss_index.py \
  > "$OUT/tests.txt" 2>&1 || failed=1
tail -4 "$OUT/tests.txt"
echo "tests done at +$(( $(date +%s)-T0 ))s"
(cd bench && timeout 200 python3 bench_faiss_gpu.py --out "$OUT/faiss_gpu.json") > "$OUT/bench.txt" 2>&1 || failed=1
cut -c1-400 "$OUT/bench.txt" | tail -4
echo "bench done at +$(( $(date +%s)-T0 ))s"; uptime
exit $failed
