"""Lineage search with a second-layer sketch beside the first-layer one: chosen on one zoo, then measured on another.

Usage: ``python bench/bench_lineage_second.py --select /tmp/zval --measure /tmp/zsmall`` (two zoo directories, e.g.
``raywse zoo --out /tmp/zval --preset small --seed 1`` and the demo's ``--seed 0`` zoo). Every model of each zoo is
rebuilt with its symmetries randomised as the evaluation randomises them and scored with the evaluation's own lineage
setting (fine-tuned children against every model outside their run).

The sketch (an experiment, not part of the library; session 24 tried it and did not keep it): a second-layer neuron
``j`` reads first-layer neurons ``i`` with weights ``w_ji``; ``v_j = Σ_i w_ji |w_i| ψ(u_i)``, with ``ψ(u) = sin(σ₁ u ·
r_k)`` on ``--width`` fixed directions (``u_i``: neuron ``i``'s unit incoming weights and bias, as the first-layer
sketch reads them; odd, so a sign flip of ``i`` and its outgoing weights changes nothing, and ``|w_i|`` undoes a
rescaling of ``i``), one block per kernel cell, then ``j``'s bias; the set of unit ``v_j`` gets the kernel sketch's
cosine features ``cos(σ₂ v̂_j · r'_k) − exp(−σ₂²/2)``, averaged, normalised. Joined to the lineage part as it stands
(first-layer sketch and structure code, :meth:`~raywse.models.encoder.NeuralGraphEncoder.kinship_form`) with
``share`` of the sketches' squared norm.

On the ``--select`` zoo: every ``σ₂`` × ``share`` at ``--width`` and ``--dim``; the best is then scored on both zoos
for ``--draws`` draws of the random directions, beside the lineage part as it stands. Writes
``bench/results/lineage_second.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import load
from bench_lineage import STRUCTURE_SHARE, LineageZoo, embed, two_zoo_parser, two_zoos
from torch import Tensor
from torch_geometric.data import Batch
from torch_geometric.utils import scatter

from raywse.eval.suite import _lineage
from raywse.graph.lineage import EDGE_CHUNK, SIGMA, _project


def second_layer_sketch(batch: Batch, dim: int, seed: int, width: int, sigma: float) -> Tensor:
    """``[B, dim]`` unit second-layer sketches (the module docstring); zeros for a graph without one."""
    neurons, projected, _, squared = _project(batch, width, seed, None, moments=False)
    norm = squared.clamp_min(1e-30).sqrt()
    psi = torch.sin(SIGMA * projected / norm.unsqueeze(1)) * neurons.unsqueeze(1)
    src, dst = batch.edge_index
    reads = torch.nonzero(neurons[src] & (batch.node_layer[dst] == 2)).view(-1)
    readers = torch.unique(dst[reads])
    slot = torch.full_like(batch.node_layer, -1)
    slot[readers] = torch.arange(len(readers))
    weights = batch.edge_attr.float()
    v = weights.new_zeros(len(readers), weights.shape[1], width)
    for start in range(0, len(reads), EDGE_CHUNK):
        e = reads[start : start + EDGE_CHUNK]
        v.index_add_(0, slot[dst[e]], (weights[e] * norm[src[e]].unsqueeze(1)).unsqueeze(2) * psi[src[e]].unsqueeze(1))
    v = torch.cat([v.flatten(1), batch.x[readers].float().view(-1, 1)], dim=1)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + v.shape[1]) * 8191 + dim)
    features = torch.cos(sigma * F.normalize(v, dim=1) @ torch.randn(v.shape[1], dim, generator=gen))
    features = features - math.exp(-(sigma**2) / 2)
    sketch = scatter(features, batch.batch[readers], dim=0, dim_size=int(batch.num_graphs), reduce="mean")
    return F.normalize(sketch, dim=1)


class Zoo(LineageZoo):
    """One zoo's randomised graphs, view, first-layer sketches and structure codes."""

    def lineage(self, second: np.ndarray | None, share: float, seed: int) -> dict:
        """Lineage mAP (overall, per family of the child) of the lineage part with ``second`` at ``share``."""
        a, b = STRUCTURE_SHARE, share if second is not None else 0.0
        parts = [math.sqrt((1 - a) * (1 - b)) * self.first, math.sqrt(a) * self.codes]
        if second is not None:
            parts.append(math.sqrt((1 - a) * b) * second)
        kin, view = np.hstack(parts).astype(np.float32), self.view

        def score(queries: np.ndarray) -> float:
            found = _lineage(kin, view, queries, lambda q: view.run != view.run[q], (1, 5, 10), 20, seed)
            return round(found["mAP"], 4)

        family = view.family[self.children]
        return {"all": score(self.children), **{f: score(self.children[family == f]) for f in sorted(set(family))}}


def main() -> None:
    ap = two_zoo_parser(__doc__.split("\n\n")[0], "lineage_second.json")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.6, 0.8])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--draws", type=int, default=3)
    args = ap.parse_args()
    command = (f"python bench/bench_lineage_second.py --select {args.select} --measure {args.measure} --sigmas "
               f"{' '.join(map(str, args.sigmas))} --shares {' '.join(map(str, args.shares))} --width {args.width} "
               f"--dim {args.dim} --draws {args.draws} --seed {args.seed}")  # fmt: skip
    select, measure, result = two_zoos(Zoo, args, command)
    sketch = {"width": args.width, "dim": args.dim}

    def second(zoo: Zoo, sigma: float, draw: int) -> np.ndarray:
        return embed(zoo.graphs, second_layer_sketch, args.dim, seed=draw, width=args.width, sigma=sigma)

    grid = []
    for sigma in args.sigmas:
        s = second(select, sigma, args.seed)
        for share in args.shares:
            grid.append({"sigma2": sigma, "share": share, "lineage": select.lineage(s, share, args.seed)["all"]})
            print("select:", grid[-1], flush=True)
    best = max(grid, key=lambda row: row["lineage"])
    result["grid_on_select"] = grid
    result["chosen"] = {**sketch, "sigma2": best["sigma2"], "share": best["share"]}
    for name, zoo in (("select", select), ("measure", measure)):
        rows = {"lineage_part_as_it_stands": zoo.lineage(None, 0.0, args.seed), "with_second_layer": []}
        for draw in range(args.draws):
            s = second(zoo, best["sigma2"], args.seed + draw)
            rows["with_second_layer"].append({"draw": args.seed + draw, **zoo.lineage(s, best["share"], args.seed)})
        result[name] = rows
        print(name, json.dumps(rows), flush=True)
    result["load_at_end"] = load()
    Path(args.results).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
