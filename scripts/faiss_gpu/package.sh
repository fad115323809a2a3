#!/bin/bash
# Package the build of scripts/faiss_gpu/build.sh as $W/out/faiss_gpu_sm90.tar.xz (41.7 MB): the faiss Python package
# with libfaiss.so and the runtime libraries the GPU machine lacks (OpenBLAS, gfortran, quadmath, gomp), every .so
# stripped and loading its neighbours from $ORIGIN, faiss/__init__.py patched to load CUDA 13's runtime and cuBLAS
# from the pip nvidia wheels on sys.path (patch_init.py), and pure-Python `packaging` (faiss.loader needs it).
# $W/dl must hold a packaging wheel (pip download packaging).
set -e
W=${W:?set W to the work folder}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p $W/out
export PATH=$W/venv/bin:$PATH
B=$W/build
P=$W/pkg
D=$P/faiss_gpu_sm90
rm -rf $P; mkdir -p $D/faiss
cd $B/faiss/python
cp __init__.py loader.py class_wrappers.py gpu_wrappers.py extra_wrappers.py array_conversions.py __init__.pyi py.typed swigfaiss.py $D/faiss/
cp -r contrib $D/faiss/contrib
python3 $HERE/patch_init.py $D/faiss/__init__.py
find $D/faiss/contrib -name __pycache__ -prune -exec rm -rf {} +
cp _swigfaiss*.so $D/faiss/
cp $B/faiss/libfaiss.so $D/faiss/libfaiss.so
cp -L /usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 $D/faiss/libopenblas.so.0
cp -L /usr/lib/x86_64-linux-gnu/libgfortran.so.5 /usr/lib/x86_64-linux-gnu/libquadmath.so.0 /usr/lib/x86_64-linux-gnu/libgomp.so.1 $D/faiss/
chmod u+w $D/faiss/*.so*
for f in $D/faiss/*.so*; do strip --strip-unneeded $f; patchelf --set-rpath '$ORIGIN' $f; done
# pure-python 'packaging' (faiss.loader imports it; torch venvs may lack it)
cd $D && unzip -q $W/dl/packaging-*.whl 'packaging/*' && cd - >/dev/null
cp $HERE/gpu_smoke.py $D/
[ -f $W/BUILD.md ] && cp $W/BUILD.md $D/ || true
ls -la $D $D/faiss
cd $P && tar -cf - faiss_gpu_sm90 | xz -T2 -9e > $W/out/faiss_gpu_sm90.tar.xz
ls -la $W/out/
