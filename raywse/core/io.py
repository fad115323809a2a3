"""Crash-safe file output and safe checkpoint input.

Every artifact raywse writes (checkpoints, graph shards, manifests, indices) goes through :func:`atomic_path`:
the bytes are written to a temporary file in the destination directory and renamed into place, so an interrupted
run never leaves a half-written file under a final name. Checkpoints are read with safetensors only, never pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

_UMASK = os.umask(0)
os.umask(_UMASK)


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a valid safetensors file."""


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it to ``final``, on failure delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the final file ordinary permissions
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, **options) -> None:
    """Write ``table`` as Parquet atomically; ``options`` go to :func:`pyarrow.parquet.write_table`."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **options)


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))


def save_checkpoint(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> None:
    """Write a safetensors checkpoint atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``. Raises :class:`CheckpointError` with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"file not found: {path}")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"not a .safetensors file (only safetensors are loaded, never pickle): {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_checkpoint_bytes(data, str(path))


def parse_checkpoint_bytes(data: bytes, origin: str = "<bytes>") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Parse safetensors bytes; the header's ``__metadata__`` is returned alongside the tensors."""
    if len(data) < 8:
        raise CheckpointError(f"truncated safetensors file ({len(data)} bytes): {origin}")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise CheckpointError(f"corrupt or truncated safetensors header (declares {header_len} bytes): {origin}")
    try:
        header = json.loads(data[8 : 8 + header_len])
        tensors = load_safetensors_bytes(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"corrupt safetensors header (not JSON): {origin}") from exc
    except (SafetensorError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"invalid safetensors file ({str(exc).splitlines()[0]}): {origin}") from exc
    metadata = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in metadata.items()}
