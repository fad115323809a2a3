"""A foreign zoo in the evaluation: checkpoints written by other code (``foreign/train_foreign.py``), graphified the
way a user's files are (no layer spec: the chain is inferred), scored within the foreign zoo and as queries against
the raywse zoo — what a user who brings a checkpoint gets.

The foreign zoo's ``manifest.csv`` gives each file's task and whether it learned; where it also names each file's hidden
activation (what its owner knows and its tensors cannot show), the zoo is loaded a second time as a user following the
README would pass it: with that activation (``raywse search --activation``) and, where the foreign code wrote one, its
``probes.npz`` (the zoo's probe inputs under its own normalisation, ``--probe-data``); scored as ``*_hinted``.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch_geometric.data import Data

from raywse.core.artifacts import ForeignFiles
from raywse.eval.suite import ranked_relevance, scored
from raywse.eval.view import ZooView
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint
from raywse.graph.probes import INFERRED, ProbeFile
from raywse.metrics import normalize
from raywse.zoo.probe_catalogue import zoo_catalogue


@dataclass
class ForeignZoo:
    """The foreign models that graphified (aligned lists) and the files that did not (path → reason)."""

    ids: list[str]
    task: np.ndarray
    learned: np.ndarray
    descriptions: dict[str, str]
    graphs: list[Data]
    errors: dict[str, str] = field(default_factory=dict)


def read_foreign_manifest(foreign_dir: str | os.PathLike) -> list[dict]:
    """The rows of a foreign zoo's ``manifest.csv``; ``FileNotFoundError`` naming the path if there is none."""
    path = Path(foreign_dir) / ForeignFiles.MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no foreign zoo manifest at {path} (build one with foreign/train_foreign.py)")
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def states_activations(foreign_dir: str | os.PathLike) -> bool:
    """Whether the foreign zoo's manifest names every file's hidden activation."""
    return all(row.get("activation") for row in read_foreign_manifest(foreign_dir))


def foreign_labels(rows: list[dict], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(task, learned)`` of the foreign models ``ids`` (in that order) from the manifest ``rows``."""
    by_id = {r["model_id"]: r for r in rows}
    task = np.array([by_id[m]["task"] for m in ids])
    return task, np.array([by_id[m]["learned"] == "True" for m in ids], dtype=bool)


def load_foreign(foreign_dir: str | os.PathLike, hinted: bool = False) -> ForeignZoo:
    """Graphify every file of the foreign zoo as a user's files are (a file that fails is kept in ``errors`` with its
    reason): probe set and activation inferred from the zoo's probe sets; ``hinted``: with each file's hidden
    activation from the manifest, probed on the foreign zoo's ``probes.npz`` if it has one (else on inferred
    probes)."""
    rows = read_foreign_manifest(foreign_dir)
    probe_file = Path(foreign_dir) / ForeignFiles.PROBES
    probes = ProbeFile(probe_file) if hinted and probe_file.is_file() else None
    probes_for = (lambda _: probes) if probes is not None else None
    ids, graphs, errors = [], [], {}
    for row in rows:
        path = Path(foreign_dir) / row["file"]
        try:
            activation = row.get("activation", "") if hinted else ""
            graphs.append(
                graphify_checkpoint(
                    str(path), row["model_id"], probes_for=probes_for, activation=activation, catalogue=zoo_catalogue
                )
            )
        except GraphifyError as exc:
            errors[str(path)] = f"{exc.stage}: {exc.reason}"
            continue
        ids.append(row["model_id"])
    descriptions = {r["model_id"]: f"{r['arch']}, {r['recipe']}, trained on {r['dataset']}" for r in rows}
    return ForeignZoo(ids, *foreign_labels(rows, ids), descriptions, graphs, errors)


def foreign_counts(foreigns: dict[str, ForeignZoo], foreign_dir: str) -> dict | None:
    """What the report says of the foreign sets (``""``: as they come, ``"_hinted"``): models, learned, tasks,
    refusals, and how the files as they come were probed — their probe sources (the inferred activation left out),
    the activations inferred, and for how many files the inferred activation is the manifest's."""
    if not foreigns:
        return None
    foreign, hinted = foreigns[""], foreigns.get("_hinted")
    stated = {r["model_id"]: r.get("activation", "") for r in read_foreign_manifest(foreign_dir)}
    sources = [g.probe_source.partition(INFERRED) for g in foreign.graphs]
    inferred = {m: rest.strip() for m, (_, sep, rest) in zip(foreign.ids, sources, strict=True) if sep and rest}
    return {
        "dir": str(foreign_dir),
        "models": len(foreign.ids),
        "learned": int(foreign.learned.sum()),
        "tasks": sorted(set(foreign.task)),
        "refused": foreign.errors,
        "probe_sources": dict(Counter(source for source, _, _ in sources).most_common()),
        "inferred_activations": dict(Counter(inferred.values()).most_common()),
        "activation_as_stated": sum(a == stated.get(m) for m, a in inferred.items()) if all(stated.values()) else None,
        "hinted_models": None if hinted is None else len(hinted.ids),
        "hinted_refused": None if hinted is None else hinted.errors,
    }


def foreign_scores(
    z_foreign: np.ndarray,
    foreign: ForeignZoo,
    z_zoo: np.ndarray,
    view: ZooView,
    ks: tuple[int, ...],
    curve_k: int,
    seed: int,
) -> dict[str, dict]:
    """``foreign``: learned foreign models as queries against the other foreign models; ``foreign_to_zoo``: learned
    foreign models of a task the zoo has, as queries against every zoo model. Relevant = same task, learned."""
    zf, zz = normalize(z_foreign), normalize(z_zoo)
    queries = np.flatnonzero(foreign.learned)

    def within(q: int, idx: np.ndarray) -> np.ndarray:
        return (foreign.task[idx] == foreign.task[q]) & foreign.learned[idx]

    out = {
        "foreign": scored(ranked_relevance(zf, queries, lambda q: np.ones(len(zf), bool), within, seed), ks, curve_k)
    }
    shared = queries[np.isin(foreign.task[queries], view.task)]
    z_all = np.concatenate([zz, zf[shared]])  # each query ranks the zoo rows only
    zoo_rows = np.r_[np.ones(len(zz), bool), np.zeros(len(shared), bool)]

    def in_zoo(q: int, idx: np.ndarray) -> np.ndarray:
        return (view.task[idx] == foreign.task[shared[q - len(zz)]]) & view.learned[idx]

    ranked = ranked_relevance(z_all, np.arange(len(zz), len(z_all)), lambda q: zoo_rows, in_zoo, seed)
    out["foreign_to_zoo"] = scored(ranked, ks, curve_k)
    return out
