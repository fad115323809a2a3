"""What embeddings say beyond retrieval: accuracy prediction (ridge and gradient-boosted probes, and the encoder's
own head) and structure (k-means against tasks, distance against accuracy gap), scored per held-out split."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raywse.eval.config import HELD_OUT
from raywse.eval.view import ZooView
from raywse.metrics import clustering_metrics, kendall_tau, nonzero_columns, normalize, r2_score, spearman


def held_masks(view: ZooView) -> list[tuple[str, np.ndarray]]:
    """``(split, mask)`` for each held-out split and for all held-out models together (``held_out``)."""
    return [(s, view.split == s) for s in HELD_OUT] + [("held_out", view.held_out)]


def within_group_tau(pred: np.ndarray, actual: np.ndarray, groups: np.ndarray, min_size: int = 3) -> tuple[float, int]:
    """Kendall τ of ``pred`` against ``actual`` inside each group of at least ``min_size`` models, averaged over
    groups; returns ``(mean τ, groups averaged)``. A group whose actual values are all equal has nothing to rank and
    is skipped; a group whose predictions are all equal ranks nothing and scores 0."""
    taus = []
    for group in np.unique(groups):
        m = groups == group
        if m.sum() < min_size or np.ptp(actual[m]) == 0:
            continue
        taus.append(0.0 if np.ptp(pred[m]) == 0 else kendall_tau(pred[m], actual[m]))
    return (float(np.mean(taus)) if taus else float("nan")), len(taus)


def accuracy_scores(predict: Callable[[np.ndarray], np.ndarray], view: ZooView, prefix: str) -> dict[str, dict]:
    """R² and Kendall τ of ``predict(mask)`` against the actual test accuracy of the models in ``mask``, pooled and
    within (task, family) groups (:func:`within_group_tau`), on each held-out split of at least two models."""
    out: dict[str, dict] = {}
    groups = np.char.add(np.char.add(view.task.astype(str), "|"), view.family.astype(str))
    for split, mask in held_masks(view):
        if mask.sum() >= 2:
            pred = predict(mask)
            within, n_groups = within_group_tau(pred, view.test_acc[mask], groups[mask])
            out[split] = {
                f"{prefix}_R2": r2_score(pred, view.test_acc[mask]),
                f"{prefix}_kendall_tau": kendall_tau(pred, view.test_acc[mask]),
                f"{prefix}_kendall_tau_within": within,
                f"{prefix}_within_groups": n_groups,
            }
    return out


#: Accuracy regressors fitted on the train split's embeddings; the one with the higher Kendall τ on the
#: ``val`` split is reported as ``acc_*`` (chosen without looking at held-out models).
REGRESSORS = {
    "ridge": lambda seed: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15))),
    "gbr": lambda seed: HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=seed),
}


def accuracy_metrics(emb: np.ndarray, view: ZooView, seed: int = 0) -> dict[str, dict]:
    """Each of :data:`REGRESSORS` fitted on train-split test accuracy and scored per held-out split (``ridge_*``,
    ``gbr_*``); ``acc_*`` repeats the regressor with the better validation τ, named in ``acc_regressor``."""
    train, val = view.split == "train", view.split == "val"
    if train.sum() < 3:
        return {}
    emb = nonzero_columns(emb)  # a column zero in every row informs neither regressor: not read
    out: dict[str, dict] = {}
    val_tau = {}
    for name, make in REGRESSORS.items():
        model = make(seed).fit(emb[train], view.test_acc[train])

        def predict(mask: np.ndarray, model=model) -> np.ndarray:
            return np.clip(model.predict(emb[mask]), 0.0, 1.0)  # accuracies live in [0, 1]

        val_tau[name] = kendall_tau(predict(val), view.test_acc[val]) if val.sum() >= 2 else float("nan")
        for split, vals in accuracy_scores(predict, view, name).items():
            out.setdefault(split, {}).update(vals)
    best = max(REGRESSORS, key=lambda n: -np.inf if np.isnan(val_tau[n]) else val_tau[n])
    for vals in out.values():
        vals.update({k.replace(f"{best}_", "acc_", 1): v for k, v in list(vals.items()) if k.startswith(f"{best}_")})
        vals["acc_regressor"] = best
    return out


def recorded_accuracy_reference(view: ZooView) -> dict[str, float]:
    """For scale beside the accuracy goals: how well each held-out model's own train-split accuracy, as the zoo
    recorded it (metadata no embedder reads), ranks the held-out models' test accuracy (``acc_tau_pooled``,
    ``acc_tau_within``, as the summary defines them; NaN where nothing can be ranked); ``{}`` when a held-out model
    has no recorded value or fewer than two models are held out."""
    if view.train_acc is None or np.isnan(view.train_acc[view.held_out]).any():
        return {}
    held = accuracy_scores(lambda mask: view.train_acc[mask], view, "recorded").get("held_out")  # None below 2
    if not held:
        return {}
    return {"acc_tau_pooled": held["recorded_kendall_tau"], "acc_tau_within": held["recorded_kendall_tau_within"]}


def head_accuracy_metrics(pred: np.ndarray | None, view: ZooView) -> dict[str, dict]:
    """The encoder's own accuracy head (``pred``: its predictions for the models of ``view``) scored like the ridge
    probe (``head_R2``, ``head_kendall_tau``); ``{}`` when the encoder has no head (``pred`` is None)."""
    if pred is None:
        return {}
    return accuracy_scores(lambda mask: pred[mask], view, "head")


def structure_metrics(emb: np.ndarray, view: ZooView, seed: int) -> dict[str, dict]:
    """k-means ARI/NMI/purity against tasks, and Spearman(cosine distance, |accuracy gap|) over same-task pairs."""
    z = normalize(emb)
    out: dict[str, dict] = {}
    for split, mask in held_masks(view):
        idx = np.flatnonzero(mask)
        if len(idx) < 2:
            continue
        res = {f"kmeans_{k}": v for k, v in clustering_metrics(z[idx], view.task[idx], seed).items()}
        dist, gap = [], []
        for q in idx:
            partners = np.flatnonzero(view.task == view.task[q])
            partners = partners[partners != q]
            dist.append(1.0 - z[partners] @ z[q])
            gap.append(np.abs(view.test_acc[partners] - view.test_acc[q]))
        res["spearman_dist_accgap"] = spearman(np.concatenate(dist), np.concatenate(gap)) if dist else float("nan")
        out[split] = res
    return out
