"""Batch embedding of graph shards with Ray Data, and the incremental index build.

``embed_graphs`` reads the shards with ``ray.data.read_parquet`` and runs :class:`EmbedActor` in an actor pool: each
actor loads the encoder once (on CUDA when it has a GPU) and embeds one Arrow batch per call, in the form an index
stores (:meth:`~raywse.models.encoder.NeuralGraphEncoder.database_form`; queries are embedded in their own form).
A graph the encoder cannot take (e.g. kernels larger than its ``edge_dim``) becomes an error row instead of failing
the pipeline.

``build_index`` is incremental: with an index of the same encoder version in ``index_dir`` only the model ids not
yet in it are embedded and added; an index of another encoder version is refused unless ``rebuild=True``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
import torch

from raywse.core.artifacts import GraphFiles
from raywse.core.config import ConfigError
from raywse.core.embeddings import EMBEDDINGS_SCHEMA, table_vectors
from raywse.core.ray_session import cluster_cpus, cluster_gpus, ensure_ray, local_ray
from raywse.core.spec import SpecError
from raywse.data.graphify import shard_paths
from raywse.graph.arrow import table_to_graphs
from raywse.graph.first_layer_match import FIRST_LAYERS_SCHEMA, first_layer_of, first_layers_table
from raywse.index.faiss_index import (
    EmbeddingIndex,
    IndexConfig,
    check_encoder_version,
    grown,
    has_index,
    index_embeddings,
    index_first_layers,
    read_meta,
    writer_lock,
)
from raywse.models.checkpoint import load_encoder
from raywse.models.encode import encode

#: Blocks per embedding actor (more than one, so a fast actor takes over the rest of a slow one's work).
BLOCKS_PER_ACTOR = 4

#: What the actors return: the embeddings plus ``error`` (null when the row embedded; ``vector`` null when not), and
#: each graph's first layer (:data:`~raywse.graph.first_layer_match.FIRST_LAYERS_SCHEMA`'s columns; null without one).
RESULT_SCHEMA = pa.schema(
    [*EMBEDDINGS_SCHEMA, pa.field("error", pa.string()), *(f for f in FIRST_LAYERS_SCHEMA if f.name != "model_id")]
)


class EmbedActor:
    """Ray Data actor: loads the encoder once, embeds Arrow batches of graph rows (database form)."""

    def __init__(self, encoder_dir: str, use_gpu: bool = False):
        self.encoder, self.version = load_encoder(encoder_dir)
        self.device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.encoder.to(self.device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        ids, graphs, errors = batch.column("model_id").to_pylist(), [], {}
        for graph in table_to_graphs(batch):
            try:
                self.encoder.kernel_slots(graph.kernel_shape, graph.model_id)
                graphs.append(graph)
            except SpecError as exc:  # e.g. kernels larger than the encoder's edge_dim
                errors[graph.model_id] = str(exc)
        encoded = encode(self.encoder, graphs, batch_size=len(graphs) or 1, device=self.device, database=True)
        vectors = iter(encoded.database)
        column = [None if m in errors else next(vectors).tolist() for m in ids]
        first = {g.model_id: first_layer_of(g) for g in graphs}
        first_layers = first_layers_table(ids, [first.get(m) for m in ids], keep_missing=True)
        return pa.table(
            {
                "model_id": pa.array(ids, pa.string()),
                "vector": pa.array(column, pa.list_(pa.float32())),
                "encoder_version": pa.array([self.version] * len(ids), pa.string()),
                "error": pa.array([errors.get(m) for m in ids], pa.string()),
                **{name: first_layers.column(name) for name in FIRST_LAYERS_SCHEMA.names if name != "model_id"},
            },
            schema=RESULT_SCHEMA,
        )


def _paths_for(graphs_dir: Path, model_ids: list[str] | None) -> list[str]:
    """Shards to read: all, or only those holding one of ``model_ids`` (from the graphs manifest)."""
    if model_ids is None:
        return shard_paths(graphs_dir)
    manifest = pq.read_table(graphs_dir / GraphFiles.MANIFEST, columns=["model_id", "shard"])
    wanted = set(model_ids)
    shards = {s for m, s in zip(*manifest.to_pydict().values(), strict=True) if m in wanted}
    return [str((graphs_dir / GraphFiles.SHARDS / s).resolve()) for s in sorted(shards)]


def actor_placement(use_gpu: bool | None = None, num_actors: int | None = None) -> tuple[bool, int]:
    """Whether the embedding actors take a GPU each, and how many run (Ray started): see :func:`embed_graphs`."""
    gpus = cluster_gpus()
    use_gpu = gpus > 0 if use_gpu is None else use_gpu
    if use_gpu:
        local = local_ray()  # GPU actors beyond a local Ray's GPUs would wait forever
        if local and not gpus:
            raise ConfigError("index.use_gpu: Ray sees no GPU on this machine; leave --use-gpu off")
        return True, min(num_actors or gpus, gpus) if local else num_actors or max(1, gpus)
    spare = max(1, cluster_cpus() - 1)  # one CPU stays free to read and split the shards: else the split never runs
    return False, min(num_actors or spare, spare)


def embed_graphs(
    graphs_dir: str | os.PathLike,
    encoder_dir: str | os.PathLike,
    model_ids: list[str] | None = None,
    batch_size: int = 64,
    num_actors: int | None = None,
    use_gpu: bool | None = None,
) -> pa.Table:
    """Embed the graphs (all, or ``model_ids``) with an actor pool; returns a table with :data:`RESULT_SCHEMA`.

    ``use_gpu=None`` uses one GPU per actor when the cluster has GPUs. ``num_actors`` defaults to the GPU count,
    or to the CPU count minus one (leaving a core for reading; CPU actors are capped there). Several actors get the
    graphs split into ``BLOCKS_PER_ACTOR`` blocks each first (a barrier: the reader packs small shards into a few
    large blocks, and an actor takes a whole block, so without it one actor embedded everything).
    """
    paths = _paths_for(Path(graphs_dir), model_ids)
    if not paths:
        return RESULT_SCHEMA.empty_table()
    ensure_ray()
    use_gpu, num_actors = actor_placement(use_gpu, num_actors)
    ds = ray.data.read_parquet(paths)
    if model_ids is not None:
        wanted = pa.array(sorted(set(model_ids)), pa.string())
        ds = ds.map_batches(
            lambda t: t.filter(pc.is_in(t["model_id"], value_set=wanted)), batch_format="pyarrow", batch_size=None
        )
    if num_actors > 1:
        ds = ds.repartition(num_actors * BLOCKS_PER_ACTOR)
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={"encoder_dir": str(Path(encoder_dir).resolve()), "use_gpu": use_gpu},
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        batch_size=batch_size,
        batch_format="pyarrow",
        num_gpus=1 if use_gpu else 0,
    )
    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    return pa.concat_tables(tables).cast(RESULT_SCHEMA) if tables else RESULT_SCHEMA.empty_table()


@dataclass
class IndexBuildSummary:
    index_dir: str
    encoder_version: str
    kind: str  # "flat" | "ivf"
    faiss_on_gpu: bool  # FAISS holds the index on the GPUs (a GPU build that sees one)
    embedded_by: str  # e.g. "1 GPU actor", "3 CPU actors"; "" when nothing was embedded
    count: int  # vectors in the index after this run
    embedded: int  # graphs embedded by this run
    reused: int  # already in the index, not re-embedded
    errors: dict[str, str]  # model_id -> why it could not be embedded
    saved: bool  # False when nothing was new
    seconds: float


def build_index(
    graphs_dir: str | os.PathLike,
    encoder_dir: str | os.PathLike,
    index_dir: str | os.PathLike,
    config: IndexConfig | None = None,
    rebuild: bool = False,
    batch_size: int = 64,
    num_actors: int | None = None,
) -> dict:
    """Embed the graphs not yet indexed and (re)write the index; returns an :class:`IndexBuildSummary` as a dict."""
    start = time.perf_counter()
    config = config or IndexConfig()
    graphs_dir, index_dir = Path(graphs_dir), Path(index_dir)
    if not (graphs_dir / GraphFiles.MANIFEST).exists():
        raise FileNotFoundError(f"not a graphify output (no {GraphFiles.MANIFEST}): {graphs_dir}")
    with writer_lock(index_dir):  # from reading the live version to saving the new one: one writer at a time
        _, version = load_encoder(encoder_dir)
        all_ids = pq.read_table(graphs_dir / GraphFiles.MANIFEST, columns=["model_id"]).column("model_id").to_pylist()
        index, old, old_first = None, EMBEDDINGS_SCHEMA.empty_table(), FIRST_LAYERS_SCHEMA.empty_table()
        if has_index(index_dir) and not rebuild:
            check_encoder_version(read_meta(index_dir), version, index_dir)
            index = EmbeddingIndex.load(index_dir, expected_encoder_version=version, config=config)
            old, old_first = index_embeddings(index_dir), index_first_layers(index_dir)
        todo = [m for m in all_ids if index is None or m not in index]

        device, use_gpu = "", config.use_gpu
        if todo:
            ensure_ray()
            use_gpu, num_actors = actor_placement(use_gpu, num_actors)
            device = f"{num_actors} {'GPU' if use_gpu else 'CPU'} actor{'s' * (num_actors > 1)}"
        result = embed_graphs(
            graphs_dir, encoder_dir, todo, batch_size=batch_size, num_actors=num_actors, use_gpu=use_gpu
        )
        failed = pc.is_valid(result.column("error"))
        errors = dict(zip(*result.filter(failed).select(["model_id", "error"]).to_pydict().values(), strict=True))
        embedded = result.filter(pc.invert(failed))
        new = embedded.select(EMBEDDINGS_SCHEMA.names)
        new_first = embedded.filter(pc.is_valid(embedded.column("directions"))).select(FIRST_LAYERS_SCHEMA.names)

        if index is None and not new.num_rows:
            example = next(iter(errors.items()), None)
            raise ValueError(f"nothing to index in {graphs_dir}: {len(errors)} graphs failed to embed, e.g. {example}")
        saved = new.num_rows > 0 or index is None
        if index is None:
            index = EmbeddingIndex.build(new.column("model_id").to_pylist(), table_vectors(new), version, config)
        else:
            index = grown(index, new.column("model_id").to_pylist(), table_vectors(new), config)
        if saved:
            index.save(index_dir, pa.concat_tables([old, new]), pa.concat_tables([old_first, new_first]))
    summary = IndexBuildSummary(
        index_dir=str(index_dir),
        encoder_version=version,
        kind=index.kind,
        faiss_on_gpu=index.on_gpu,
        embedded_by=device,
        count=len(index),
        embedded=new.num_rows,
        reused=len(all_ids) - len(todo),
        errors=errors,
        saved=saved,
        seconds=round(time.perf_counter() - start, 3),
    )
    return asdict(summary)
