"""Connecting to Ray: the embedded default (a local Ray started in-process) or a cluster.

``RAY_ADDRESS`` (set by ``ray job submit``) or an explicit address selects a cluster; otherwise Ray starts locally.
"""

from __future__ import annotations

import os

import ray

from raywse.core import console


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Initialise Ray once per process; a no-op when it is already up. Inside a quiet :func:`~raywse.core.console.
    job_console` worker output stays in Ray's session logs (their directory is printed) instead of being forwarded."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    forward = not console.quiet()
    kwargs: dict = {"log_to_driver": forward, "configure_logging": True, "logging_level": "WARNING"}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    if not forward:
        console.say(f"Ray worker logs: {ray_log_dir()}")


def ray_log_dir() -> str:
    """This Ray session's log directory on this node (worker stdout/stderr, Ray Data and Train logs)."""
    from ray._private.worker import global_worker  # no public accessor in Ray 2.60

    node = getattr(global_worker, "node", None)
    return node.get_logs_dir_path() if node is not None else "the Ray session's logs directory on each node"


def cluster_cpus() -> int:
    """CPUs Ray can schedule on (after :func:`ensure_ray`)."""
    return int(ray.cluster_resources().get("CPU", 1))


def cluster_gpus() -> int:
    """GPUs Ray can schedule on (after :func:`ensure_ray`)."""
    return int(ray.cluster_resources().get("GPU", 0))


def local_ray() -> bool:
    """Whether Ray runs on this machine alone (no ``RAY_ADDRESS``): it has no autoscaler, so work asking for more
    GPUs than it has would wait for them forever."""
    return not os.environ.get("RAY_ADDRESS")


def close_ray() -> None:
    """Disconnect from Ray (and stop the local Ray this process started), so that nothing Ray still has to say —
    a raylet's warning relayed late by a background thread — reaches the terminal after a job's last line."""
    if ray.is_initialized():
        ray.shutdown()
