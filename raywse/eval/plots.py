"""The report's two figures: a PCA projection of the raywse embeddings and precision@k curves of every embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

from raywse.core.io import atomic_path
from raywse.eval.config import RAYWSE
from raywse.eval.view import ZooView
from raywse.metrics import normalize


def _savefig(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_projection(emb: np.ndarray, view: ZooView, path: Path) -> None:
    """Two PCA scatter plots of the normalised embeddings, coloured by task and by architecture family."""
    xy = PCA(n_components=2).fit_transform(normalize(emb)) if len(emb) > 2 else np.zeros((len(emb), 2))
    fig = Figure(figsize=(14, 6))
    axes = fig.subplots(1, 2)
    for ax, labels, title in ((axes[0], view.task, "task"), (axes[1], view.family, "architecture family")):
        names = sorted(set(labels))
        cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
        for i, name in enumerate(names):
            m = labels == name
            ax.scatter(xy[m, 0], xy[m, 1], s=14, color=cmap(i), label=name, alpha=0.8)
        ax.set_title(f"raywse embeddings (PCA), coloured by {title}")
        ax.legend(fontsize=6, ncol=2 if len(names) > 10 else 1, loc="best")
    _savefig(fig, path)


def plot_precision_curves(metrics: dict, path: Path, curve_k: int) -> None:
    """precision@1..``curve_k`` of every embedder (``metrics``: embedder → split → metric) on two splits."""
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for ax, split in zip(axes, ("test_seed", "cross_family"), strict=True):
        for name, scores in metrics.items():
            curve = scores.get(split, {}).get("precision_curve")
            if curve and any(c is not None for c in curve):
                ys = [np.nan if c is None else c for c in curve]
                ax.plot(range(1, curve_k + 1), ys, marker="o", ms=3, lw=2.5 if name == RAYWSE else 1.2, label=name)
        ax.set(title=f"precision@k, {split}", xlabel="k", ylabel="precision", ylim=(0, 1.02))
        ax.legend(fontsize=7)
    _savefig(fig, path)
