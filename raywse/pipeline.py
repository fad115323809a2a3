"""The main job: zoo -> graphs -> train -> index -> evaluation report, on a local Ray or a cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raywse.data.graphify import GraphifyConfig, graphify
from raywse.raycluster import ensure_ray
from raywse.zoo.build import ZooConfig, build_zoo


@dataclass
class PipelineConfig:
    """Where the run writes, and how big it is; laptop-sized by default."""

    out_dir: str = field(default="runs/demo", metadata={"help": "directory for every artifact of the run"})
    zoo_preset: str = field(default="small", metadata={"help": "zoo size: tiny | small | bench"})
    num_cpus: int | None = field(default=None, metadata={"help": "CPUs for the local Ray (default: all)"})


def run_pipeline(config: PipelineConfig) -> dict[str, Path]:
    """Run every stage in order; each stage skips work a previous run already finished. Returns artifact paths."""
    out = Path(config.out_dir)
    ensure_ray(num_cpus=config.num_cpus)
    artifacts: dict[str, Path] = {}
    print(f"[1/2] zoo -> {out / 'zoo'}")
    artifacts["zoo_manifest"] = build_zoo(ZooConfig(preset=config.zoo_preset), out / "zoo")
    print(f"[2/2] graphify -> {out / 'graphs'}")
    result = graphify(artifacts["zoo_manifest"], out / "graphs", GraphifyConfig())
    print(f"      {result.written} written, {result.skipped} already done, {len(result.errors)} errors")
    artifacts["graphs_manifest"] = result.manifest
    return artifacts
