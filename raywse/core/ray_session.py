"""Connecting to Ray: the embedded default (a local Ray started in-process) or a cluster.

``RAY_ADDRESS`` (set by ``ray job submit``) or an explicit address selects a cluster; otherwise Ray starts locally.
"""

from __future__ import annotations

import os

import ray


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; a no-op when it is already up."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict = {"log_to_driver": True, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (after :func:`ensure_ray`)."""
    return int(ray.cluster_resources().get("CPU", 1))
