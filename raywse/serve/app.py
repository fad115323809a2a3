"""The online search service: a Ray Serve deployment that loads the encoder and the FAISS index once per replica.

Routes (``route_prefix="/"``):

- ``GET /healthz`` → ``200 {"status": "ok", "encoder_version", "indexed"}`` once the replica is loaded;
- ``POST /search?k=10`` with the raw bytes of a ``.safetensors`` checkpoint as the body → ``200 {"neighbours":
  [{"rank", "model_id", "score", "task", "family", "test_acc"}, ...], "encoder_version", "probe_source",
  "took_ms"}``.

Bad input never takes a replica down: an empty, oversize, truncated, non-safetensors (pickle included) or NaN upload,
an unsupported network or a bad ``k`` is a ``4xx`` with ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from raywse.core.io import CheckpointError, parse_checkpoint_bytes
from raywse.graph.checkpoint import GraphifyError, graphify_tensors
from raywse.graph.probes import ProbeFile
from raywse.index.search import Searcher
from raywse.zoo.datasets import probes_for_metadata

MAX_K = 1000


@dataclass(frozen=True)
class ServiceConfig:
    """What one replica loads, and the largest upload it accepts."""

    index_dir: str
    encoder_dir: str
    zoo_dir: str | None = None
    max_upload_bytes: int = 512 * 2**20
    probe_data: str = ""  # probe file for uploads that name no zoo task (else Gaussian probes)


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

    def search_bytes(self, data: bytes, k: int) -> dict:
        """Neighbours of an uploaded checkpoint; :class:`BadRequest` for anything wrong with the upload."""
        if not data:
            raise BadRequest(400, "empty upload: send the raw bytes of a .safetensors checkpoint as the body")
        if len(data) > self.config.max_upload_bytes:
            raise BadRequest(413, f"upload of {len(data)} bytes exceeds the limit of {self.config.max_upload_bytes}")
        try:
            tensors, metadata = parse_checkpoint_bytes(data, "upload")
        except CheckpointError as exc:
            raise BadRequest(400, f"not a readable .safetensors checkpoint: {exc}") from exc
        try:
            graph = graphify_tensors(tensors, metadata, "upload", probes=probes_for_metadata(metadata, self.probe_file))
            neighbours = self.searcher.search_graph(graph, k)
        except GraphifyError as exc:
            raise BadRequest(422, f"cannot graphify the upload ({exc.stage}): {exc.reason}") from exc
        except CheckpointError as exc:
            raise BadRequest(422, str(exc)) from exc
        return {
            "neighbours": [{k: _json_safe(v) for k, v in asdict(n).items()} for n in neighbours],
            "encoder_version": self.searcher.version,
            "probe_source": graph.probe_source,
        }

    async def __call__(self, request: Request) -> JSONResponse:
        start = time.perf_counter()
        route = request.url.path.rstrip("/") or "/"
        try:
            if route == "/healthz" and request.method == "GET":
                body = {"status": "ok", "encoder_version": self.searcher.version, "indexed": len(self.searcher.index)}
                return JSONResponse(body)
            if route == "/search" and request.method == "POST":
                out = self.search_bytes(await request.body(), _parse_k(request.query_params.get("k", "10")))
                return JSONResponse(out | {"took_ms": round(1000 * (time.perf_counter() - start), 2)})
            raise BadRequest(404, f"no route {request.method} {route} (GET /healthz, POST /search?k=10)")
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)


def _parse_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise BadRequest(400, f"k must be an integer, got {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise BadRequest(400, f"k must be in [1, {MAX_K}], got {k}")
    return k
