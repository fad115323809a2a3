"""Kernels as edge features: each conv kernel is one edge's feature vector of at most :data:`MAX_KERNEL` (3×3).

A larger kernel first loses its all-zero border rows/columns (padding that changes nothing), then what is still larger
is resampled by area (:func:`fit_kernels`: each output cell sums the input cells it covers, weighted by their overlap,
so the kernel's sum — its response to a constant input — is kept). Kernels smaller than a graph's largest
``(kh, kw)`` are zero-padded centred (:func:`center_pad_kernels`); an odd amount of padding puts the extra row/column
at the bottom/right.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch_geometric.data import Data

from raywse.core.spec import SpecError

#: The largest kernel an edge carries; larger ones are trimmed and resampled to it (:func:`fit_kernels`).
MAX_KERNEL = (3, 3)


def _area_matrix(size: int, target: int) -> torch.Tensor:
    """``[target, size]`` overlap of each of ``size`` unit cells with ``target`` equal bins of ``[0, size)``; every
    column sums to 1, so resampling with it keeps sums."""
    edges = torch.linspace(0, size, target + 1, dtype=torch.float64)
    cells = torch.arange(size + 1, dtype=torch.float64)
    lo = torch.maximum(edges[:-1, None], cells[None, :-1])
    hi = torch.minimum(edges[1:, None], cells[None, 1:])
    return (hi - lo).clamp(min=0)


def fit_kernels(kernels: torch.Tensor, max_shape: tuple[int, int] = MAX_KERNEL) -> torch.Tensor:
    """``[..., h, w]`` kernels fitted to at most ``max_shape``: border rows/columns that are zero in every kernel
    are dropped first (exact), then a dimension still too large is resampled by area (sum-preserving)."""
    for dim, limit in ((-2, max_shape[0]), (-1, max_shape[1])):
        while kernels.shape[dim] > limit:
            lines = kernels.transpose(dim, -1).reshape(-1, kernels.shape[dim]).abs().amax(0)
            if lines[0] == 0:
                kernels = kernels.narrow(dim, 1, kernels.shape[dim] - 1)
            elif lines[-1] == 0:
                kernels = kernels.narrow(dim, 0, kernels.shape[dim] - 1)
            else:
                break
    h, w = kernels.shape[-2:]
    if h > max_shape[0] or w > max_shape[1]:
        rows = _area_matrix(h, min(h, max_shape[0])).to(kernels.dtype)
        cols = _area_matrix(w, min(w, max_shape[1])).to(kernels.dtype)
        kernels = rows @ kernels @ cols.T
    return kernels


def center_pad_kernels(kernels: torch.Tensor, kernel_shape: tuple[int, int]) -> torch.Tensor:
    """Zero-pad ``[..., h, w]`` kernels centred to ``kernel_shape`` (extra row/column at the bottom/right)."""
    h, w = kernels.shape[-2:]
    dh, dw = kernel_shape[0] - h, kernel_shape[1] - w
    if dh < 0 or dw < 0:
        raise SpecError(f"cannot pad {h}x{w} kernels to the smaller {kernel_shape[0]}x{kernel_shape[1]}")
    return F.pad(kernels, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def kernel_shape_of(data: Data) -> tuple[int, int]:
    """The ``(kh, kw)`` of a graph's kernels, or of a ``Batch``'s (one per graph); :class:`SpecError` for a batch of
    mixed kernel shapes."""
    shape = data.kernel_shape
    if isinstance(shape[0], list | tuple):  # a Batch holds one (kh, kw) per graph
        shapes = {tuple(int(v) for v in s) for s in shape}
        if len(shapes) != 1:
            raise SpecError("mixed kernel shapes in one batch: pad each graph to one shape before batching "
                            "(pad_edge_features; the encoder's prepare)")  # fmt: skip
        return shapes.pop()
    return int(shape[0]), int(shape[1])


def kernel_shape_batches(graphs: Sequence[Data], batch_size: int) -> Iterator[list[int]]:
    """Indices into ``graphs`` in batches of at most ``batch_size`` graphs of one kernel shape each (shapes in
    sorted order), so each batch collates without padding."""
    shapes = [kernel_shape_of(g) for g in graphs]
    for shape in sorted(set(shapes)):
        same = [i for i, s in enumerate(shapes) if s == shape]
        for start in range(0, len(same), batch_size):
            yield same[start : start + batch_size]


def pad_edge_features(data: Data, kernel_shape: tuple[int, int]) -> Data:
    """``data`` with its ``edge_attr`` kernels centred-padded to ``kernel_shape`` (``data`` itself if they fit).

    Works on one graph or on a ``Batch`` whose graphs share a kernel shape; pad graphs one by one before batching
    mixed shapes (MLP 1×1 edges with CNN 3×3 edges). :class:`SpecError` for kernels larger than ``kernel_shape``.
    """
    collated = isinstance(data.kernel_shape[0], list | tuple)
    kh, kw = kernel_shape_of(data)
    th, tw = (int(v) for v in kernel_shape)
    if data.edge_attr.shape[1] != kh * kw:
        raise SpecError(f"edge_attr width {data.edge_attr.shape[1]} does not match kernel_shape {(kh, kw)}")
    if (kh, kw) == (th, tw):
        return data
    if kh > th or kw > tw:
        raise SpecError(
            f"graph {getattr(data, 'model_id', '?')} has {kh}x{kw} kernels: cannot pad them to the smaller {th}x{tw} "
            f"(at most {th}x{tw} are supported here)"
        )
    out = data.clone()
    out.edge_attr = center_pad_kernels(data.edge_attr.view(-1, kh, kw), (th, tw)).reshape(-1, th * tw).contiguous()
    out.kernel_shape = [(th, tw)] * len(data.kernel_shape) if collated else (th, tw)
    return out


def kernel_cells(kernel_shape: tuple[int, int], grid: tuple[int, int] = MAX_KERNEL) -> torch.Tensor:
    """``[kh * kw]``: the cell of a ``grid``-sized kernel (row-major) that each entry of a ``kernel_shape`` kernel
    lands in when centre-padded to it (:func:`center_pad_kernels`); :class:`SpecError` for a larger kernel."""
    (kh, kw), (gh, gw) = (tuple(int(v) for v in s) for s in (kernel_shape, grid))
    if kh > gh or kw > gw:
        raise SpecError(f"{kh}x{kw} kernels do not fit a {gh}x{gw} grid")
    top, left = (gh - kh) // 2, (gw - kw) // 2
    return torch.arange(gh * gw).view(gh, gw)[top : top + kh, left : left + kw].reshape(-1)
