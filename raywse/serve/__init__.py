"""The online search service (Ray Serve): :mod:`raywse.serve.app` is the deployment, :func:`run_service` runs it."""

from __future__ import annotations

import time
from pathlib import Path

from raywse.core.artifacts import EncoderFiles
from raywse.core.ray_session import ensure_ray
from raywse.graph.probes import ProbeFile


def run_service(
    index_dir: str,
    encoder_dir: str,
    zoo_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    max_upload_mb: int = 512,
    probe_data: str = "",
    block: bool = True,
) -> str:
    """Start the search service on ``host:port`` with ``replicas`` replicas; returns its URL (blocks when
    ``block``, until interrupted). A missing index or encoder is a :class:`FileNotFoundError` before Ray starts."""
    for name, path in (("index", index_dir), ("encoder", encoder_dir)):
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{name} directory not found: {path}")
    if probe_data:
        ProbeFile(probe_data)  # a missing or unreadable probe file fails here, before Ray starts
    if not (Path(encoder_dir) / EncoderFiles.CONFIG).is_file():
        raise FileNotFoundError(f"not an exported encoder (no {EncoderFiles.CONFIG}): {encoder_dir}")
    from ray import serve

    from raywse.serve.app import SearchService, ServiceConfig

    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    config = ServiceConfig(str(Path(index_dir).resolve()), str(Path(encoder_dir).resolve()),
                           str(Path(zoo_dir).resolve()) if zoo_dir else None, max_upload_mb * 2**20,
                           str(Path(probe_data).resolve()) if probe_data else "")  # fmt: skip
    serve.run(SearchService.options(num_replicas=replicas).bind(config), route_prefix="/", blocking=False)
    url = f"http://{host}:{port}"
    print(f"raywse search service on {url} (GET /healthz, POST /search?k=10); Ctrl-C stops it", flush=True)
    if block:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url
