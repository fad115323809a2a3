"""Zoo fixtures: one real tiny zoo (the ``tiny`` preset) built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> Path:
    """A real zoo of tiny networks trained on bundled datasets; returns the zoo dir."""
    from raywse.raycluster import ensure_ray
    from raywse.zoo.build import ZooConfig, build_zoo

    ensure_ray(num_cpus=2)
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(ZooConfig(preset="tiny"), out, progress=False)
    return out
