"""Query the index with one checkpoint: graphify → encode → FAISS search → join zoo metadata."""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from torch_geometric.data import Data

from raywse.core.artifacts import read_zoo_manifest
from raywse.core.config import ConfigError
from raywse.core.embeddings import embeddings_table
from raywse.core.io import CheckpointError
from raywse.core.records import RELATIONS
from raywse.core.spec import SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint, read_spec_file
from raywse.graph.first_layer_match import (
    RERANK_DEPTH,
    FirstLayer,
    first_layer_of,
    first_layers_table,
    rerank,
    table_first_layers,
)
from raywse.graph.probes import ProbeFile
from raywse.index.faiss_index import (
    EmbeddingIndex,
    IndexConfig,
    IndexVersionError,
    grown,
    index_embeddings,
    index_first_layers,
    live_version,
    writer_lock,
)
from raywse.models.checkpoint import load_encoder
from raywse.models.encode import encode
from raywse.zoo.datasets import probes_for_metadata
from raywse.zoo.probe_catalogue import zoo_catalogue

logger = logging.getLogger(__name__)


@dataclass
class Neighbor:
    rank: int  # 1-based
    model_id: str
    score: float  # cosine of the parts of the embedding the query has (1: the same network); lineage: re-scored
    task: str = ""  # metadata columns are empty / NaN without a zoo manifest or for ids not in it
    family: str = ""
    test_acc: float = math.nan


def _zoo_metadata(zoo: str | os.PathLike) -> dict[str, dict]:
    rows = read_zoo_manifest(zoo, columns=["model_id", "task", "family", "test_acc"])
    return {row["model_id"]: row for row in rows}


class Searcher:
    """An encoder, the index it built and optional zoo metadata, loaded once, answering many queries.

    Raises :class:`FileNotFoundError` for a missing encoder or index and
    :class:`~raywse.index.faiss_index.IndexVersionError` for an index built by another encoder.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike,
        encoder_dir: str | os.PathLike,
        zoo_manifest: str | os.PathLike | None = None,
    ):
        self.encoder, self.version = load_encoder(encoder_dir)
        self.index_dir = Path(index_dir)
        self.index_version = live_version(index_dir)
        self.index = EmbeddingIndex.load(index_dir, expected_encoder_version=self.version)
        self.meta = _zoo_metadata(zoo_manifest) if zoo_manifest is not None else {}
        self._first_layers: tuple[str | None, dict[str, FirstLayer]] | None = None  # (index version, first layers)

    def first_layers(self) -> dict[str, FirstLayer]:
        """The indexed models' first layers (what lineage searches re-score with), read once per index version in
        service (an index saved before they were kept has none: its answers keep their cosines)."""
        if self._first_layers is None or self._first_layers[0] != self.index_version:
            table = index_first_layers(self.index_dir, self.index_version)
            self._first_layers = (self.index_version, table_first_layers(table))
            missing = len(self.index) - len(table)
            if missing > 0:
                logger.warning("%d of %d indexed models have no first layer stored (an index built before they "
                               "were kept, or too large a first layer): lineage search keeps their cosines; "
                               "`raywse index --rebuild` stores them", missing, len(self.index))  # fmt: skip
        return self._first_layers[1]

    def refresh(self) -> bool:
        """Serve the live version if a writer saved another one since (one small file read when nothing changed).

        A version that cannot be loaded — deleted by a newer save while this one was read, or built by another
        encoder after a rebuild — leaves the index in memory in service (and is retried on the next call)."""
        version = live_version(self.index_dir)
        if version == self.index_version:
            return False
        try:
            index = EmbeddingIndex.load(self.index_dir, expected_encoder_version=self.version)
        except (FileNotFoundError, ValueError, IndexVersionError) as exc:
            logger.warning("keeping index version %s in service: cannot load version %s: %s", self.index_version,
                           version, exc)  # fmt: skip
            return False
        self.index, self.index_version = index, version
        return True

    def add_graphs(
        self, graphs: list[Data], config: IndexConfig | None = None, lock_timeout_s: float | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """Embed ``graphs`` and save them, added to the live version, as a new version (under the writer lock; a
        :class:`TimeoutError` after ``lock_timeout_s``), then serve it; returns ``(added ids, {model_id: why
        not})``. The index in service is only replaced once the new version is saved."""
        errors: dict[str, str] = {}
        embedded = []
        for graph in graphs:
            try:
                embedded.append((graph.model_id, encode(self.encoder, [graph], database=True).database[0]))
            except SpecError as exc:
                errors[graph.model_id] = f"cannot encode: {exc}"
        first = {g.model_id: first_layer_of(g) for g in graphs}
        with writer_lock(self.index_dir, lock_timeout_s):
            live = EmbeddingIndex.load(self.index_dir, expected_encoder_version=self.version)  # a copy to extend
            fresh = [(m, v) for m, v in embedded if m not in live]
            errors |= {m: "already in the index" for m, _ in embedded if m in live}
            if fresh:
                ids, vectors = [m for m, _ in fresh], np.stack([v for _, v in fresh])
                table = pa.concat_tables(
                    [index_embeddings(self.index_dir), embeddings_table(ids, vectors, self.version)]
                )
                layers = [index_first_layers(self.index_dir), first_layers_table(ids, [first[m] for m in ids])]
                live = grown(live, ids, vectors, config or live.config)
                live.save(self.index_dir, table, pa.concat_tables(layers))
            self.index, self.index_version = live, live_version(self.index_dir)
        return [m for m, _ in fresh], errors

    def search_graph(self, graph: Data, k: int = 10, relation: str = "function") -> list[Neighbor]:
        """The ``k`` indexed models nearest to one neural graph by ``relation`` (:data:`RELATIONS`);
        :class:`CheckpointError` if it cannot be encoded, :class:`ValueError` for an unknown relation and
        :class:`~raywse.core.config.ConfigError` for a lineage search with an encoder that has no lineage part."""
        if relation not in RELATIONS:
            raise ValueError(f"unknown relation {relation!r}: one of {', '.join(RELATIONS)}")
        lineage = relation == "lineage"
        if lineage and not self.encoder.answers_lineage:
            raise ConfigError(
                "this encoder has no lineage part (an export from before session 15): it cannot search "
                "by lineage; retrain it to add one"
            )
        try:
            encoded = encode(self.encoder, [graph], kinship=lineage)
        except SpecError as exc:
            raise CheckpointError(f"cannot encode {graph.model_id}: {exc}") from exc
        # a lineage query lies in the lineage part only: an IVF index's lists, trained on the stored vectors, say
        # little of where its relatives are, so it visits every list
        depth = max(k, RERANK_DEPTH) if lineage else k
        ids, scores = self.index.search(encoded.kinship if lineage else encoded.embeddings, depth, exhaustive=lineage)
        found = [(m, float(s)) for m, s in zip(ids[0], scores[0], strict=True) if m is not None]  # IVF: maybe < k
        if lineage:
            found = self._rescored(graph, found)
        neighbours = []
        for rank, (model_id, score) in enumerate(found[:k], start=1):
            row = self.meta.get(model_id, {})
            neighbours.append(
                Neighbor(
                    rank=rank,
                    model_id=model_id,
                    score=float(score),
                    task=row.get("task", ""),
                    family=row.get("family", ""),
                    test_acc=float(row.get("test_acc", math.nan)),
                )
            )
        return neighbours

    def _rescored(self, graph: Data, found: list[tuple[str, float]]) -> list[tuple[str, float]]:
        """A lineage search's answers (its first ``max(k, RERANK_DEPTH)``, the query itself among them when it is
        indexed) re-scored by matching first layers (:func:`~raywse.graph.first_layer_match.rerank`), best first."""
        if not found:
            return found
        stored = self.first_layers()
        scores = rerank(first_layer_of(graph), [stored.get(m) for m, _ in found], np.array([s for _, s in found]))
        return [(found[i][0], float(scores[i])) for i in np.argsort(-scores, kind="stable")]


def query_graph(
    path: str | os.PathLike, probe_data: str = "", spec: str = "", activation: str = "", infer_probes: bool = True
) -> Data:
    """The neural graph of the checkpoint at ``path`` as a query: ``probe_data`` is a probe file of its input space
    (:func:`~raywse.zoo.datasets.probes_for_metadata` picks the probes), ``spec`` a JSON spec file for a checkpoint
    that carries none (else its spec is inferred), ``activation`` the hidden activation of an inferred chain (its
    tensors cannot tell it). Where the input domain or the activation is unknown and ``infer_probes`` is set, the
    network is probed on the zoo's probe set (and run with the activation) it answers most informatively
    (:mod:`raywse.graph.probe_inference`; the graph's ``probe_source`` says which). :class:`CheckpointError` with a
    one-line reason for a checkpoint that cannot be read or graphified."""
    path = Path(path)
    try:
        probes_for = functools.partial(probes_for_metadata, probe_file=ProbeFile(probe_data) if probe_data else None)
        fallback = read_spec_file(spec) if spec else ""
        return graphify_checkpoint(
            str(path), path.stem, probes_for=probes_for, fallback_spec=fallback, activation=activation,
            catalogue=zoo_catalogue if infer_probes else None,
        )  # fmt: skip
    except GraphifyError as exc:
        raise CheckpointError(f"cannot graphify {path} ({exc.stage}): {exc.reason}") from exc


def search_checkpoint(
    path: str | os.PathLike,
    index_dir: str | os.PathLike,
    encoder_dir: str | os.PathLike,
    zoo_manifest: str | os.PathLike | None = None,
    k: int = 10,
    probe_data: str = "",
    spec: str = "",
    activation: str = "",
    relation: str = "function",
    infer_probes: bool = True,
) -> list[Neighbor]:
    """The ``k`` indexed models nearest to the checkpoint at ``path`` by ``relation`` (:data:`RELATIONS`), its graph
    built by :func:`query_graph` (``probe_data``, ``spec``, ``activation``, ``infer_probes``); ``zoo_manifest`` (a
    zoo dir or its ``manifest.parquet``) adds task, family and accuracy. A checkpoint that cannot be read, graphified
    or encoded raises :class:`CheckpointError` with a one-line reason; an index built by another encoder raises
    :class:`~raywse.index.faiss_index.IndexVersionError`.
    """
    graph = query_graph(path, probe_data, spec, activation, infer_probes)
    return Searcher(index_dir, encoder_dir, zoo_manifest).search_graph(graph, k, relation)
