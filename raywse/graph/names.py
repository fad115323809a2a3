"""Helpers every tensor-naming scheme of spec inference shares (:mod:`raywse.graph.infer`,
:mod:`raywse.graph.infer_resnet`)."""

from __future__ import annotations

import re

#: Input height/width assumed for conv nets whose spatial size no flatten pins down (the graph does not depend on it).
NOMINAL_SPATIAL = 8


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs numerically: ``layers.2`` < ``layers.10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)
