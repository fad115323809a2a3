"""Inner-product FAISS index over model embeddings, one code path for CPU and GPU.

Vectors are float32. Queries are L2-normalised; stored vectors are kept as given: an encoder's database form
(:meth:`~raywse.models.encoder.NeuralGraphEncoder.database_form`), unit vectors but for the parts only some queries
read, so a score is the cosine of the parts the query has (1 for a model found by itself). Small collections use an
exact ``IndexFlatIP``; above ``exact_threshold`` an ``IndexIVFFlat`` (inner-product metric, trained on a sample).
With a GPU the index is built and searched on it (``index_cpu_to_all_gpus``) and copied back to CPU to save.

On disk an index directory holds ``CURRENT`` (the name of the live version) and ``versions/<n>/`` with
``index.faiss``, ``ids.parquet``, ``meta.json`` and optionally ``embeddings.parquet`` and ``first_layers.parquet``
(what lineage searches re-score with, :mod:`raywse.graph.first_layer_match`). A save writes a complete new
version directory, then atomically replaces ``CURRENT``; a save killed midway leaves the previous version live.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

try:
    import faiss
except ImportError as exc:  # FAISS is an extra: exactly one build per environment
    raise ImportError("FAISS is not installed: pip install 'raywse[cpu]' (or [gpu]; scripts/setup.sh picks)") from exc

from raywse.core.artifacts import IndexFiles
from raywse.core.embeddings import read_embeddings, write_embeddings
from raywse.core.io import atomic_path, write_json_atomic, write_parquet_atomic
from raywse.graph.first_layer_match import read_first_layers, write_first_layers
from raywse.metrics import normalize

IVF_TRAIN_PER_LIST = 64  # k-means sample per inverted list (FAISS advises 30-256; 256 made 1M CPU builds slow)
IVF_MIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid
GPU_MAX_NPROBE = 2048  # FAISS's GPU IVF visits at most this many lists per query
GPU_MAX_K = 2048  # FAISS's GPU search returns at most this many neighbours per query

#: Test hook: called with the version dir after ``index.faiss`` is written and before ``CURRENT`` switches.
_before_commit: Callable[[Path], None] | None = None


class IndexVersionError(RuntimeError):
    """The index on disk was built by a different encoder than the one in use."""


@dataclass
class IndexConfig:
    """Which FAISS index to build and how to search it."""

    exact_threshold: int = field(default=50_000, metadata={"help": "below this many vectors: exact IndexFlatIP"})
    nlist: int | None = field(default=None, metadata={"help": "IVF inverted lists (default: ~4*sqrt(n))"})
    nprobe: int = field(default=16, metadata={"help": "IVF lists visited per query"})
    use_gpu: bool | None = None  # None = auto (faiss.get_num_gpus() > 0)
    seed: int = field(default=0, metadata={"help": "seed of the IVF training sample"})

    def gpu(self) -> bool:
        return faiss.get_num_gpus() > 0 if self.use_gpu is None else self.use_gpu

    def nlist_for(self, n: int) -> int:
        nlist = self.nlist or int(4 * math.sqrt(n))
        return max(1, min(nlist, n // IVF_MIN_PER_LIST))


class EmbeddingIndex:
    """String model ids ↔ FAISS row ids; the FAISS index may live on GPU (saved via a CPU copy)."""

    def __init__(self, index: faiss.Index, ids: list[str], encoder_version: str, kind: str, config: IndexConfig):
        self.index = index
        self.ids = ids
        self.encoder_version = encoder_version
        self.kind = kind
        self.config = config
        self._positions = {m: i for i, m in enumerate(ids)}
        if len(self._positions) != len(ids):
            raise ValueError("duplicate model ids in the index")

    @property
    def on_gpu(self) -> bool:
        """Whether the FAISS index lives on the GPUs."""
        return self.config.gpu()

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._positions

    @classmethod
    def build(
        cls, ids: list[str], vectors: np.ndarray, encoder_version: str, config: IndexConfig | None = None
    ) -> EmbeddingIndex:
        """Build an exact (below ``config.exact_threshold``) or IVF index over ``vectors`` (stored as given)."""
        config = config or IndexConfig()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        n, dim = vectors.shape
        if n < config.exact_threshold or n == 0:
            kind, cpu = "flat", faiss.IndexFlatIP(dim)
        else:
            kind, cpu = "ivf", faiss.index_factory(dim, f"IVF{config.nlist_for(n)},Flat", faiss.METRIC_INNER_PRODUCT)
        index = _to_device(cpu, config)
        if kind == "ivf":
            rng = np.random.default_rng(config.seed)
            sample = min(n, faiss.extract_index_ivf(cpu).nlist * IVF_TRAIN_PER_LIST)
            index.train(vectors[np.sort(rng.choice(n, sample, replace=False))])
            _set_nprobe(index, config)
        out = cls(index, [], encoder_version, kind, config)
        out._add(list(ids), vectors)
        return out

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        """Append vectors; refuses ids already in the index (or repeated in ``ids``)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32) if len(ids) else np.zeros((0, self.dim), np.float32)
        self._add(list(ids), vectors)

    def _add(self, ids: list[str], vectors: np.ndarray) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dim {vectors.shape[1]}, the index has dim {self.dim}")
        dupes = [m for m in ids if m in self._positions]
        if dupes or len(set(ids)) != len(ids):
            example = dupes[0] if dupes else next(m for m in ids if ids.count(m) > 1)
            raise ValueError(f"duplicate model id (already in the index or repeated in the batch): {example}")
        if not ids:
            return
        self.index.add(vectors)
        for m in ids:
            self._positions[m] = len(self.ids)
            self.ids.append(m)

    def search(
        self, vectors: np.ndarray, k: int, exhaustive: bool = False
    ) -> tuple[list[list[str | None]], np.ndarray]:
        """Top-``k`` neighbours by the inner product of the normalised queries with the stored vectors (cosine, for
        unit ones): ``(ids [n][k], scores [n, k])``; k is capped at the index size.

        An IVF search visits ``nprobe`` lists (every list when ``exhaustive``: exact; on a GPU at most
        :data:`GPU_MAX_NPROBE`); one that finds fewer than ``k`` candidates there pads with ``None`` / ``-inf``. An
        exhaustive search sets the index's ``nprobe`` for its duration: searches of one index must not run
        concurrently with it (the service answers searches one at a time, on its event loop). On a GPU, a ``k``
        past :data:`GPU_MAX_K` is answered by a host copy of the index, made for that search.
        """
        queries = normalize(vectors)
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dim {queries.shape[1]}, the index has dim {self.dim}")
        k = min(k, len(self.ids))
        if k <= 0:
            return [[] for _ in range(len(queries))], np.zeros((len(queries), 0), np.float32)
        if k > GPU_MAX_K and self.on_gpu:
            host = dataclasses.replace(self.config, use_gpu=False)
            return EmbeddingIndex(self.cpu_index(), list(self.ids), self.encoder_version, self.kind, host).search(
                vectors, k, exhaustive
            )
        every_list = exhaustive and self.kind == "ivf"
        with self._probing(self.nlist) if every_list else contextlib.nullcontext():
            scores, rows = self.index.search(queries, k)
        ids = [[self.ids[r] if r >= 0 else None for r in row] for row in rows]
        return ids, np.where(rows >= 0, scores, -np.inf).astype(np.float32)

    @functools.cached_property
    def nlist(self) -> int:
        """Inverted lists of an IVF index (read once: on a GPU it takes a copy to the host)."""
        return faiss.extract_index_ivf(self.cpu_index()).nlist

    @contextlib.contextmanager
    def _probing(self, nprobe: int) -> Iterator[None]:
        limit = GPU_MAX_NPROBE if self.on_gpu else nprobe
        _set_nprobe(self.index, dataclasses.replace(self.config, nprobe=min(nprobe, limit)))
        try:
            yield
        finally:
            _set_nprobe(self.index, self.config)

    def cpu_index(self) -> faiss.Index:
        return faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index

    def save(
        self, index_dir: str | os.PathLike, embeddings: pa.Table | None = None, first_layers: pa.Table | None = None
    ) -> Path:
        """Write a new version (plus ``embeddings.parquet`` and ``first_layers.parquet`` when given) and switch
        ``CURRENT`` to it atomically."""
        index_dir = Path(index_dir)
        versions = index_dir / IndexFiles.VERSIONS
        versions.mkdir(parents=True, exist_ok=True)
        number = max(_version_numbers(versions), default=0) + 1
        vdir = versions / str(number)
        vdir.mkdir()
        with atomic_path(vdir / IndexFiles.INDEX) as tmp:
            faiss.write_index(self.cpu_index(), str(tmp))
        if _before_commit is not None:
            _before_commit(vdir)
        write_parquet_atomic(pa.table({"model_id": pa.array(self.ids, pa.string())}), vdir / IndexFiles.IDS)
        if embeddings is not None:
            write_embeddings(embeddings, vdir / IndexFiles.EMBEDDINGS)
        if first_layers is not None:
            write_first_layers(first_layers, vdir / IndexFiles.FIRST_LAYERS)
        meta = {
            "encoder_version": self.encoder_version,
            "count": len(self.ids),
            "kind": self.kind,
            "dim": self.dim,
            "nprobe": self.config.nprobe,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(meta, vdir / IndexFiles.META)
        previous = _current_name(index_dir)
        with atomic_path(index_dir / IndexFiles.CURRENT) as tmp:
            tmp.write_text(f"{number}\n")
        _prune(versions, keep={str(number), previous})
        return vdir

    @classmethod
    def load(
        cls,
        index_dir: str | os.PathLike,
        expected_encoder_version: str | None = None,
        config: IndexConfig | None = None,
    ) -> EmbeddingIndex:
        """Load the live version; raises :class:`IndexVersionError` if built by another encoder version."""
        vdir = current_version_dir(index_dir)
        meta = json.loads((vdir / IndexFiles.META).read_text())  # the same version as the files below
        check_encoder_version(meta, expected_encoder_version, index_dir)
        config = config or IndexConfig(nprobe=meta.get("nprobe", IndexConfig.nprobe))
        cpu = faiss.read_index(str(vdir / IndexFiles.INDEX))
        ids = pq.read_table(vdir / IndexFiles.IDS).column("model_id").to_pylist()
        if not (cpu.ntotal == len(ids) == meta["count"]):
            raise ValueError(f"corrupt index {vdir}: {cpu.ntotal} vectors, {len(ids)} ids, meta count {meta['count']}")
        index = _to_device(cpu, config)
        if meta["kind"] == "ivf":
            _set_nprobe(index, config)
        return cls(index, ids, meta["encoder_version"], meta["kind"], config)


def grown(index: EmbeddingIndex, ids: list[str], vectors: np.ndarray, config: IndexConfig) -> EmbeddingIndex:
    """``index`` with ``ids``/``vectors`` appended (in place), or rebuilt as IVF from its exact vectors once a flat
    index grows past ``config.exact_threshold``."""
    if not ids:
        return index
    if index.kind == "flat" and len(index) + len(ids) >= config.exact_threshold:
        vectors = np.concatenate([index.cpu_index().reconstruct_n(0, len(index)), vectors])
        return EmbeddingIndex.build(index.ids + list(ids), vectors, index.encoder_version, config)
    index.add(list(ids), vectors)
    return index


@contextlib.contextmanager
def writer_lock(index_dir: str | os.PathLike, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the index directory's writer lock (an advisory ``flock``): one writer at a time across processes — an
    index job, service replicas adding checkpoints. Readers never need it (a save switches ``CURRENT`` atomically).
    ``timeout_s``: give up with :class:`TimeoutError` after that long (default: wait). ``flock`` is only as good as
    the file system's: local disks and NFSv4 honour it across processes and hosts; some FUSE mounts ignore it."""
    Path(index_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(index_dir) / IndexFiles.LOCK, "a") as handle:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the index at {index_dir} is being written by another job") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def live_version(index_dir: str | os.PathLike) -> str | None:
    """The name of the live version (``None`` when there is no index): changes whenever a writer saves."""
    return _current_name(Path(index_dir))


def index_embeddings(index_dir: str | os.PathLike) -> pa.Table:
    """The live version's embeddings (an empty table when the index was saved without them)."""
    return read_embeddings(current_version_dir(index_dir) / IndexFiles.EMBEDDINGS)


def index_first_layers(index_dir: str | os.PathLike, version: str | None = None) -> pa.Table:
    """The first layers of ``version`` (default: the live one; an empty table when it was saved without them)."""
    vdir = current_version_dir(index_dir) if version is None else Path(index_dir) / IndexFiles.VERSIONS / version
    return read_first_layers(vdir / IndexFiles.FIRST_LAYERS)


def current_version_dir(index_dir: str | os.PathLike) -> Path:
    """The directory of the live version (raises ``FileNotFoundError`` when there is no index)."""
    name = _current_name(Path(index_dir))
    if name is None:
        raise FileNotFoundError(f"no index in {index_dir} (no {IndexFiles.CURRENT} file): build one first")
    return Path(index_dir) / IndexFiles.VERSIONS / name


def has_index(index_dir: str | os.PathLike) -> bool:
    return _current_name(Path(index_dir)) is not None


def read_meta(index_dir: str | os.PathLike) -> dict:
    return json.loads((current_version_dir(index_dir) / IndexFiles.META).read_text())


def check_encoder_version(meta: dict, expected: str | None, index_dir: str | os.PathLike) -> None:
    if expected is not None and meta["encoder_version"] != expected:
        raise IndexVersionError(
            f"index at {index_dir} was built by encoder {meta['encoder_version']}, this encoder is {expected}: "
            "rebuild with `python jobs/index.py --rebuild ...` (or build_index(..., rebuild=True))"
        )


def _to_device(cpu: faiss.Index, config: IndexConfig) -> faiss.Index:
    return faiss.index_cpu_to_all_gpus(cpu) if config.gpu() else cpu


def _set_nprobe(index: faiss.Index, config: IndexConfig) -> None:
    space = faiss.GpuParameterSpace() if config.gpu() else faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", config.nprobe)


def _current_name(index_dir: Path) -> str | None:
    pointer = index_dir / IndexFiles.CURRENT
    return pointer.read_text().strip() if pointer.exists() else None


def _version_numbers(versions: Path) -> list[int]:
    return [int(p.name) for p in versions.iterdir() if p.name.isdigit()]


def _prune(versions: Path, keep: set[str | None]) -> None:
    """Delete every version directory except ``keep`` (the new and the previous live version)."""
    for path in versions.iterdir():
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
