"""The online search service: a Ray Serve deployment that loads the encoder and the FAISS index once per replica.

Routes (``route_prefix="/"``):

- ``GET /healthz`` → ``200 {"status": "ok", "encoder_version", "indexed"}`` once the replica is loaded;
- ``POST /search?k=10`` with the raw bytes of a ``.safetensors`` checkpoint as the body → ``200 {"neighbours":
  [{"rank", "model_id", "score", "task", "family", "test_acc"}, ...], "encoder_version", "probe_source",
  "took_ms"}`` (``&relation=lineage``: its relatives instead of the models that do what it does; ``&activation=``:
  the hidden activation of an inferred chain);
- ``POST /index`` with ``{"paths": [...]}`` (absolute paths of checkpoints under one of the service's index roots, on
  storage every replica can read; optional ``"ids"`` of the same length, else each file's stem; ``403`` when the
  service has no index root) → ``200 {"added": [...], "errors": [{"path", "reason"}], "indexed",
  "index_version", "took_ms"}``: the new models are embedded and saved as a new index version under the index's
  writer lock (the index job takes it too; ``503`` after 30 s of waiting for it), and every replica serves that
  version from its next request — readers never see a half-written index.

Bad input never takes a replica down: an empty, oversize, truncated, non-safetensors (pickle included) or NaN upload,
an unsupported network, a bad ``k`` or an unknown relation is a ``4xx`` with ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse

from raywse.core.artifacts import EncoderFiles
from raywse.core.config import ConfigError
from raywse.core.io import CheckpointError, parse_checkpoint_bytes
from raywse.core.records import RELATIONS
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint, graphify_tensors
from raywse.graph.probes import ProbeFile
from raywse.index.faiss_index import current_version_dir
from raywse.index.search import Searcher
from raywse.zoo.datasets import probes_for_metadata
from raywse.zoo.probe_catalogue import zoo_catalogue

MAX_K = 1000
MAX_INDEX_PATHS = 1_000  # checkpoints per POST /index
INDEX_LOCK_TIMEOUT_S = 30.0  # POST /index answers 503 when another writer holds the index longer
ROUTES = "GET /healthz, POST /search?k=10, POST /index"


@dataclass(frozen=True)
class ServiceConfig:
    """What one replica loads, and the largest upload it accepts."""

    index_dir: str
    encoder_dir: str
    zoo_dir: str | None = None
    max_upload_bytes: int = 512 * 2**20
    probe_data: str = ""  # probe file for uploads that name no zoo task (else Gaussian probes)
    index_roots: tuple[str, ...] = ()  # POST /index reads checkpoints under these directories only (none: route off)

    @classmethod
    def from_args(
        cls,
        index_dir: str,
        encoder_dir: str,
        zoo_dir: str | None = None,
        max_upload_mb: int = 512,
        probe_data: str = "",
        index_roots: Sequence[str] = (),
    ) -> ServiceConfig:
        """Check the paths (a one-line :class:`FileNotFoundError` for a missing index, encoder, probe file or index
        root) and resolve them, so that replicas started elsewhere read the same files."""
        for name, path in (("index", index_dir), ("encoder", encoder_dir), *(("index root", r) for r in index_roots)):
            if not Path(path).is_dir():
                raise FileNotFoundError(f"{name} directory not found: {path}")
        if not (Path(encoder_dir) / EncoderFiles.CONFIG).is_file():
            raise FileNotFoundError(f"not an exported encoder (no {EncoderFiles.CONFIG}): {encoder_dir}")
        current_version_dir(index_dir)  # a one-line FileNotFoundError when nothing was built there
        if probe_data:
            ProbeFile(probe_data)  # a missing or unreadable probe file fails here, not in every replica
        resolve = lambda p: str(Path(p).resolve()) if p else p  # noqa: E731
        return cls(resolve(index_dir), resolve(encoder_dir), resolve(zoo_dir) or None, max_upload_mb * 2**20,
                   resolve(probe_data), tuple(resolve(r) for r in index_roots))  # fmt: skip

    def refusal(self, path: str) -> str | None:
        """Why ``POST /index`` may not read ``path`` (``None``: it may): it must be absolute and under an index
        root, so that a client can neither probe nor index the rest of the file system."""
        if not Path(path).is_absolute():
            return "not an absolute path"
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in self.index_roots):
            return "outside the service's --index-root directories"
        return None


class BadRequest(Exception):
    """A client error: answered with ``status`` and a one-line ``{"error": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _json_safe(value):
    return None if isinstance(value, float) and not math.isfinite(value) else value


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=8)
class SearchService:
    """One replica: the :class:`~raywse.index.search.Searcher` of ``config``, answering the routes above."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.searcher = Searcher(config.index_dir, config.encoder_dir, config.zoo_dir)
        self.probe_file = ProbeFile(config.probe_data) if config.probe_data else None

    def search_bytes(self, data: bytes, k: int, activation: str = "", relation: str = RELATIONS[0]) -> dict:
        """Neighbours of an uploaded checkpoint (``activation``, ``relation``: as ``raywse search``'s);
        :class:`BadRequest` for anything wrong with the upload."""
        if relation not in RELATIONS:
            raise BadRequest(400, f"unknown relation {relation!r}: one of {', '.join(RELATIONS)}")
        if not data:
            raise BadRequest(400, "empty upload: send the raw bytes of a .safetensors checkpoint as the body")
        if len(data) > self.config.max_upload_bytes:
            raise BadRequest(413, f"upload of {len(data)} bytes exceeds the limit of {self.config.max_upload_bytes}")
        try:
            tensors, metadata = parse_checkpoint_bytes(data, "upload")
        except CheckpointError as exc:
            raise BadRequest(400, f"not a readable .safetensors checkpoint: {exc}") from exc
        try:
            probes = probes_for_metadata(metadata, self.probe_file)
            graph = graphify_tensors(
                tensors, metadata, "upload", probes=probes, activation=activation, catalogue=zoo_catalogue
            )
            neighbours = self.searcher.search_graph(graph, k, relation)
        except GraphifyError as exc:
            raise BadRequest(422, f"cannot graphify the upload ({exc.stage}): {exc.reason}") from exc
        except (CheckpointError, ConfigError) as exc:  # ConfigError: a lineage search with an encoder without one
            raise BadRequest(422, str(exc)) from exc
        return {
            "neighbours": [{k: _json_safe(v) for k, v in asdict(n).items()} for n in neighbours],
            "encoder_version": self.searcher.version,
            "probe_source": graph.probe_source,
        }

    def index_paths(self, paths: list[str], ids: list[str]) -> dict:
        """Graphify, embed and add the checkpoints at ``paths`` (as ``ids``); bad files are reported, not raised."""
        if not self.config.index_roots:
            raise BadRequest(403, "POST /index is off: start the service with --index-root DIR (checkpoints under "
                             "DIR may then be added)")  # fmt: skip
        graphs, errors = [], []
        probes_for = functools.partial(probes_for_metadata, probe_file=self.probe_file)
        for path, model_id in zip(paths, ids, strict=True):
            try:
                refusal = self.config.refusal(path)
                if refusal or not Path(path).is_file():
                    raise GraphifyError("read", refusal or "no such file")
                graphs.append(graphify_checkpoint(path, model_id, probes_for=probes_for, catalogue=zoo_catalogue))
            except GraphifyError as exc:
                errors.append({"path": path, "reason": f"({exc.stage}) {exc.reason}"})
        try:
            added, refused = self.searcher.add_graphs(graphs, lock_timeout_s=INDEX_LOCK_TIMEOUT_S)
        except TimeoutError as exc:
            raise BadRequest(503, f"{exc}; retry later") from exc
        except OSError as exc:  # e.g. a read-only index directory
            raise BadRequest(503, f"cannot write the index: {exc}") from exc
        path_of = dict(zip(ids, paths, strict=True))
        errors += [{"path": path_of[m], "reason": f"{m}: {why}"} for m, why in refused.items()]
        return {"added": added, "errors": errors, "indexed": len(self.searcher.index),
                "index_version": self.searcher.index_version}  # fmt: skip

    async def __call__(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        route = request.url.path.rstrip("/") or "/"
        try:
            if route == "/healthz" and request.method == "GET":
                self.searcher.refresh()
                body = {"status": "ok", "encoder_version": self.searcher.version, "indexed": len(self.searcher.index)}
                return JSONResponse(body)
            if route == "/search" and request.method == "POST":
                self.searcher.refresh()
                params = request.query_params
                out = self.search_bytes(
                    await request.body(), _parse_k(params.get("k", "10")), params.get("activation", ""),
                    params.get("relation", RELATIONS[0]),
                )  # fmt: skip
            elif route == "/index" and request.method == "POST":
                # in a thread: the replica keeps answering searches (the index in service is swapped once saved)
                out = await asyncio.to_thread(self.index_paths, *_parse_index_request(await request.body()))
            else:
                raise BadRequest(404, f"no route {request.method} {route} ({ROUTES})")
            return JSONResponse(out | {"took_ms": round(1000 * (time.perf_counter() - start), 2)})
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)


def build_app(args: dict) -> Application:
    """The application builder of ``deploy/serve.yaml`` (``import_path: raywse.serve.app:build_app``): ``args`` are
    :meth:`ServiceConfig.from_args`'s; replicas and autoscaling come from the config file's ``deployments``."""
    unknown = set(args) - set(inspect.signature(ServiceConfig.from_args).parameters)
    if unknown:
        raise ValueError(f"unknown args for the raywse service: {', '.join(sorted(unknown))}")
    return SearchService.bind(ServiceConfig.from_args(**args))


def _parse_index_request(body: bytes) -> tuple[list[str], list[str]]:
    """``(paths, ids)`` of a ``POST /index`` body; :class:`BadRequest` for anything malformed."""
    try:
        request = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(400, 'the body must be JSON: {"paths": ["/shared/a.safetensors", ...]}') from None
    paths = request.get("paths") if isinstance(request, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise BadRequest(400, 'the body must be JSON with a non-empty list of file paths: {"paths": [...]}')
    if len(paths) > MAX_INDEX_PATHS:
        raise BadRequest(413, f"{len(paths)} paths in one request; at most {MAX_INDEX_PATHS}")
    ids = request.get("ids") or [Path(p).stem for p in paths]
    if not isinstance(ids, list) or len(ids) != len(paths) or not all(isinstance(m, str) and m for m in ids):
        raise BadRequest(400, '"ids", when given, must be a list of non-empty strings, one per path')
    if len(set(ids)) != len(ids):
        raise BadRequest(400, 'two checkpoints in one request have one model id (give distinct "ids")')
    return paths, ids


def _parse_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise BadRequest(400, f"k must be an integer, got {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise BadRequest(400, f"k must be in [1, {MAX_K}], got {k}")
    return k
