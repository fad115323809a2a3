"""Ray Data graphify: checkpoints in, graph shards + an errors table out.

Each input row names one checkpoint. ``map_batches`` reads a batch of checkpoints, turns each good one into a neural
graph (probed on the train split of its dataset for zoo models, else on the user's probe file or Gaussian probes:
:func:`probes_for_metadata`), and writes the batch's graphs as one Parquet shard (atomically: temp file, then
rename). Bad checkpoints never raise out of the UDF: each becomes one error row (path, model_id, stage, reason), so
one corrupt file cannot abort the pipeline. The set of shard files on disk is the record of finished work: a rerun
skips every model already in a shard, and an interrupted run leaves only complete shards behind."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from raywse.core.artifacts import GraphFiles, ZooFiles
from raywse.core.io import write_parquet_atomic
from raywse.core.ray_session import ensure_ray
from raywse.core.records import GraphifyFailure, records_to_table
from raywse.graph.arrow import PARQUET_OPTIONS, graphs_to_table, table_to_graphs
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint, read_spec_file
from raywse.graph.infer import check_activation_hint
from raywse.graph.names import natural_key
from raywse.graph.probes import ProbeFile
from raywse.zoo.datasets import probes_for_metadata
from raywse.zoo.probe_catalogue import zoo_catalogue


@dataclass
class GraphifyConfig:
    """How to graphify: ``batch_size`` checkpoints per Ray Data batch (= per shard); ``probe_data``: a ``.npy`` /
    ``.npz`` probe file for checkpoints outside a zoo manifest (:class:`~raywse.graph.probes.ProbeFile`); ``spec``: a
    JSON spec file for checkpoints that carry no spec, instead of inferring one
    (:func:`~raywse.graph.checkpoint.read_spec_file`); ``activation``: the hidden activation of inferred chains;
    ``infer_probes``: where a checkpoint's input domain or hidden activation is unknown, probe it on the zoo's probe
    set (and with the activation) it answers most informatively (:mod:`raywse.graph.probe_inference`)."""

    batch_size: int = 64
    progress: bool = True
    probe_data: str = dataclasses.field(default="", metadata={"help": ".npy/.npz probes for foreign checkpoints"})
    spec: str = dataclasses.field(
        default="", metadata={"help": "JSON spec file for checkpoints without one (else inferred from names)"}
    )
    activation: str = dataclasses.field(
        default="", metadata={"help": "hidden activation of inferred chains (else inferred with the probes)"}
    )
    infer_probes: bool = dataclasses.field(
        default=True, metadata={"help": "probe checkpoints of unknown input domain or activation on the zoo's "
                                        "probe set they answer most informatively (else Gaussian / no probes)"}
    )  # fmt: skip


@dataclass
class GraphifyInput:
    """One checkpoint to graphify; ``layer_spec`` is empty when it must come from the file or be inferred;
    ``dataset`` / ``input_norm`` are set for zoo models (their probes come from the dataset's train split)."""

    path: str
    model_id: str
    layer_spec: str = ""
    dataset: str = ""
    input_norm: str = ""


@dataclass
class GraphifyResult:
    out_dir: Path
    written: int  # graphs written by this run
    skipped: int  # already present from an earlier run
    errors: list[GraphifyFailure]
    total: int  # graphs in the output after this run


def inputs_from_source(source: str | os.PathLike | list) -> list[GraphifyInput]:
    """Resolve what to graphify: a zoo manifest (file or zoo dir), a directory of ``.safetensors``, or a file list.

    A directory without a manifest, or a list of files, is treated as foreign checkpoints: model ids are the paths
    relative to the directory (or file stems), and layer specs come from file metadata or are inferred.
    """
    if isinstance(source, list | tuple):
        paths = [Path(p) for p in source]
        return _dedupe_ids([GraphifyInput(str(p.resolve()), p.stem) for p in paths])
    source = Path(source)
    if source.is_dir() and (source / ZooFiles.MANIFEST).exists() and (source / ZooFiles.MODELS).is_dir():
        source = source / ZooFiles.MANIFEST
    if source.is_file() and source.suffix == ".parquet":
        table = pq.read_table(source)
        root = source.parent
        return [
            GraphifyInput(
                str((root / row["path"]).resolve()),
                row["model_id"],
                row["layer_spec"],
                row.get("dataset") or "",
                row.get("input_norm") or ("unit" if row.get("dataset") else ""),
            )  # fmt: skip
            for row in table.select([c for c in _MANIFEST_COLUMNS if c in table.column_names]).to_pylist()
        ]
    if source.is_dir():
        files = sorted(source.rglob("*.safetensors"))
        return [GraphifyInput(str(p.resolve()), p.relative_to(source).with_suffix("").as_posix()) for p in files]
    if source.exists():
        return [GraphifyInput(str(source.resolve()), source.stem)]
    raise FileNotFoundError(f"no such zoo manifest, directory or checkpoint: {source}")


_MANIFEST_COLUMNS = ("model_id", "path", "layer_spec", "dataset", "input_norm")


def _dedupe_ids(items: list[GraphifyInput]) -> list[GraphifyInput]:
    """Make model ids unique by suffixing a short hash of the path where two stems collide."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.model_id] = counts.get(item.model_id, 0) + 1
    for item in items:
        if counts[item.model_id] > 1:
            item.model_id = f"{item.model_id}-{hashlib.sha1(item.path.encode()).hexdigest()[:8]}"
    return items


def graphify_batch(
    batch: pd.DataFrame,
    out_dir: str,
    probe_data: str = "",
    fallback_spec: str = "",
    activation: str = "",
    infer_probes: bool = True,
) -> pd.DataFrame:
    """Ray Data UDF: graphify a batch, write its good graphs as one shard, return one status row per input
    (``fallback_spec``: the JSON spec of checkpoints without one; ``activation``: of inferred chains;
    ``infer_probes``: as :class:`GraphifyConfig`'s)."""
    graphs, rows = [], []
    probe_file = ProbeFile(probe_data) if probe_data else None  # read once per batch
    catalogue = zoo_catalogue if infer_probes else None
    for item in batch.itertuples(index=False):
        row = {"model_id": item.model_id, "path": item.path, "status": "ok", "stage": "", "reason": "", "shard": ""}
        try:
            probes_for = functools.partial(
                probes_for_metadata, probe_file=probe_file, dataset=item.dataset, input_norm=item.input_norm
            )
            graphs.append(
                graphify_checkpoint(
                    item.path, item.model_id, item.layer_spec, probes_for, fallback_spec, activation, catalogue
                )
            )
        except GraphifyError as exc:
            row.update(status="error", stage=exc.stage, reason=exc.reason)
        except Exception as exc:  # noqa: BLE001 - an unexpected bug in one file must not abort the rest
            row.update(status="error", stage="graph", reason=f"{type(exc).__name__}: {exc}")
        rows.append(row)
    if graphs:
        ids = sorted(g.model_id for g in graphs)
        shard = GraphFiles.shard(hashlib.sha1("".join(ids).encode()).hexdigest()[:16])
        write_parquet_atomic(graphs_to_table(graphs), Path(out_dir) / GraphFiles.SHARDS / shard, **PARQUET_OPTIONS)
        for row in rows:
            if row["status"] == "ok":
                row["shard"] = shard
    return pd.DataFrame(rows)


def probe_sources(out_dir: str | os.PathLike, most: int = 6) -> str:
    """What the graphs in ``out_dir`` were probed on, for a person: the ``most`` commonest ``probe_source`` values
    with their counts (``train:digits|signed inferred tanh 91, none 2``); empty when there are no graphs."""
    manifest = Path(out_dir) / GraphFiles.MANIFEST
    if not manifest.is_file():
        return ""
    counts = Counter(pq.read_table(manifest, columns=["probe_source"]).column("probe_source").to_pylist())
    shown = ", ".join(f"{source} {n}" for source, n in counts.most_common(most))
    return shown + (f", and {len(counts) - most} other sources" if len(counts) > most else "")


def completed_model_ids(out_dir: str | os.PathLike) -> set[str]:
    """Model ids already present in complete shards (temp files of interrupted writes are ignored)."""
    shard_dir = Path(out_dir) / GraphFiles.SHARDS
    if not shard_dir.is_dir():
        return set()
    done: set[str] = set()
    for shard in sorted(shard_dir.glob(GraphFiles.SHARD_GLOB)):
        done.update(pq.read_table(shard, columns=["model_id"]).column("model_id").to_pylist())
    return done


def graphify(
    source: str | os.PathLike | list, out_dir: str | os.PathLike, config: GraphifyConfig | None = None
) -> GraphifyResult:
    """Graphify every checkpoint in ``source`` into ``out_dir`` with Ray Data; see the module docstring."""
    config = config or GraphifyConfig()
    out_dir = Path(out_dir)
    if config.probe_data:
        ProbeFile(config.probe_data)  # a missing or unreadable probe file fails here, before any work
    fallback_spec = read_spec_file(config.spec) if config.spec else ""  # and so does a bad spec file
    if config.activation:
        check_activation_hint(config.activation)  # and an activation raywse cannot evaluate
    inputs = inputs_from_source(source)
    (out_dir / GraphFiles.SHARDS).mkdir(parents=True, exist_ok=True)
    done = completed_model_ids(out_dir)
    seen: set[str] = set()
    todo, errors = [], []
    for item in inputs:
        if item.model_id in seen:
            errors.append(GraphifyFailure(item.path, item.model_id, "read", "duplicate model_id in the input"))
            continue
        seen.add(item.model_id)
        if item.model_id not in done:
            todo.append(item)

    written = 0
    if todo:
        ensure_ray()
        ray.data.DataContext.get_current().enable_progress_bars = config.progress
        items = [dataclasses.asdict(i) for i in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / config.batch_size)))
        # One operator over in-memory items: the per-operator resource reservation (for pipelines of several) only
        # held tasks back here (6,186 demo checkpoints on 2 CPUs: 12.6 -> 7.6 s at batch 64, bench/README.md)
        ds.context.op_resource_reservation_enabled = False
        status = ds.map_batches(
            graphify_batch,
            batch_size=config.batch_size,
            batch_format="pandas",
            fn_kwargs={
                "out_dir": str(out_dir),
                "probe_data": config.probe_data,
                "fallback_spec": fallback_spec,
                "activation": config.activation,
                "infer_probes": config.infer_probes,
            },  # fmt: skip
        ).to_pandas()
        ok = status[status["status"] == "ok"]
        written = len(ok)
        for row in status[status["status"] == "error"].itertuples(index=False):
            errors.append(GraphifyFailure(row.path, row.model_id, row.stage, row.reason))

    write_parquet_atomic(records_to_table(errors, GraphifyFailure), out_dir / GraphFiles.ERRORS)
    manifest = write_graph_manifest(out_dir)
    return GraphifyResult(out_dir, written, len(seen) - len(todo), errors, manifest.num_rows)


def write_graph_manifest(out_dir: Path) -> pa.Table:
    """Rebuild ``manifest.parquet`` (model_id, shard, num_nodes, num_edges, probe_source) from the complete shards."""
    parts = []
    for shard in sorted((out_dir / GraphFiles.SHARDS).glob(GraphFiles.SHARD_GLOB)):
        t = pq.read_table(shard, columns=["model_id", "num_nodes", "edge_index", "probe_source"])
        num_edges = pc.divide(pc.list_value_length(t.column("edge_index")), 2).cast(pa.int64())
        parts.append(
            pa.table(
                {
                    "model_id": t.column("model_id"),
                    "shard": pa.array([shard.name] * t.num_rows, pa.string()),
                    "num_nodes": t.column("num_nodes").cast(pa.int64()),
                    "num_edges": num_edges,
                    "probe_source": t.column("probe_source"),
                }
            )
        )
    schema = pa.schema([("model_id", pa.string()), ("shard", pa.string()), ("num_nodes", pa.int64()),
                        ("num_edges", pa.int64()), ("probe_source", pa.string())])  # fmt: skip
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    write_parquet_atomic(table, out_dir / GraphFiles.MANIFEST)
    return table


def load_graphs(graphs_dir: str | os.PathLike, model_ids: list[str] | None = None) -> list:
    """Load graphs from a graphify output directory (all, or the given ids in that order)."""
    graphs_dir = Path(graphs_dir)
    if not (graphs_dir / GraphFiles.MANIFEST).exists():
        raise FileNotFoundError(f"not a graphify output (no {GraphFiles.MANIFEST}): {graphs_dir}")
    graphs = []
    for shard in sorted((graphs_dir / GraphFiles.SHARDS).glob(GraphFiles.SHARD_GLOB)):
        graphs.extend(table_to_graphs(pq.read_table(shard)))
    if model_ids is None:
        return sorted(graphs, key=lambda g: natural_key(g.model_id))
    by_id = {g.model_id: g for g in graphs}
    missing = [m for m in model_ids if m not in by_id]
    if missing:
        raise KeyError(f"{len(missing)} model ids not in {graphs_dir}, e.g. {missing[0]}")
    return [by_id[m] for m in model_ids]


def shard_paths(graphs_dir: str | os.PathLike) -> list[str]:
    """Absolute paths of the complete shards (for ``ray.data.read_parquet``)."""
    return [str(p.resolve()) for p in sorted((Path(graphs_dir) / GraphFiles.SHARDS).glob(GraphFiles.SHARD_GLOB))]
