"""Patch FAISS's faiss/__init__.py (argv[1]) to load CUDA 13's runtime and cuBLAS from pip nvidia wheels on sys.path."""

import sys
from pathlib import Path

p = sys.argv[1]
s = Path(p).read_text()
new = '''
def _preload_cu13_libs():
    """[faiss_gpu_sm90 custom build] Best-effort preload of the CUDA 13 runtime
    libs (libcudart.so.13, libcublasLt.so.13, libcublas.so.13) from pip
    'nvidia-*' CUDA-13 wheels (site-packages/nvidia/cu13/lib or
    site-packages/nvidia/*/lib) with RTLD_GLOBAL, so libfaiss.so's DT_NEEDED
    entries resolve even without LD_LIBRARY_PATH. Anything not found here is
    left to the normal dynamic loader search (LD_LIBRARY_PATH, ldconfig).
    Set FAISS_NO_CUDA_PRELOAD=1 to disable."""
    import ctypes
    import glob
    import os
    if os.environ.get("FAISS_NO_CUDA_PRELOAD"):
        return
    dirs = []
    for sp in sys.path:
        if not sp or not os.path.isdir(os.path.join(sp, "nvidia")):
            continue
        dirs.append(os.path.join(sp, "nvidia", "cu13", "lib"))
        dirs.extend(sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib"))))
    for soname in ("libcudart.so.13", "libnvJitLink.so.13",
                   "libcublasLt.so.13", "libcublas.so.13"):
        for d in dirs:
            path = os.path.join(d, soname)
            if os.path.exists(path):
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    break
                except OSError:
                    pass


_preload_cu13_libs()
del _preload_cu13_libs
'''
old = "_preload_gpu_libs()\ndel _preload_gpu_libs\n"
assert old in s
s = s.replace(old, old + new, 1)
Path(p).write_text(s)
print("patched", p)
