"""Rank and regression agreement between predictions and targets."""

from __future__ import annotations

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    from scipy import stats  # scipy.stats is slow to import; metrics are imported by the search path

    return float(stats.spearmanr(a, b).statistic)


def kendall_tau(pred: np.ndarray, target: np.ndarray) -> float:
    from scipy import stats

    return float(stats.kendalltau(pred, target).statistic)


def r2_score(pred: np.ndarray, target: np.ndarray) -> float:
    target = np.asarray(target, dtype=np.float64)
    ss_res = float(np.sum((target - pred) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
