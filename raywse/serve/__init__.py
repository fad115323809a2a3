"""The online search service (Ray Serve): :mod:`raywse.serve.app` is the deployment, :func:`run_service` runs it."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence

import ray

from raywse.core.ray_session import ensure_ray

#: The Serve application's name (``serve status`` shows it).
APP_NAME = "raywse"


def _wait_for_a_stop_signal() -> None:
    """Block until SIGINT (Ctrl-C) or SIGTERM. The wait wakes every second: the kernel may hand the signal to one of
    Ray's threads, and Python runs handlers only when the main thread runs."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(timeout=1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_service(
    index_dir: str,
    encoder_dir: str,
    zoo_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    replicas: int = 1,
    max_upload_mb: int = 512,
    probe_data: str = "",
    index_roots: Sequence[str] = (),
    block: bool = True,
) -> str:
    """Start the search service on ``host:port`` with ``replicas`` replicas; returns its URL (blocks when
    ``block``, until interrupted). A missing index, encoder or probe file is a :class:`FileNotFoundError` before
    Ray starts. ``deploy/serve.yaml`` deploys the same application with autoscaling (``serve deploy``)."""
    from ray import serve

    from raywse.serve.app import ROUTES, SearchService, ServiceConfig

    config = ServiceConfig.from_args(index_dir, encoder_dir, zoo_dir, max_upload_mb, probe_data, index_roots)
    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    app = SearchService.options(num_replicas=replicas).bind(config)
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    url = f"http://{host}:{port}"
    print(f"raywse search service on {url} ({ROUTES}); Ctrl-C stops it", flush=True)
    if block:
        _wait_for_a_stop_signal()
        if os.environ.get("RAY_ADDRESS"):
            serve.delete(APP_NAME)  # on a cluster: this application goes, the cluster and its other apps stay
        else:
            ray.shutdown()  # the local Ray this command started goes down with everything in it
    return url
