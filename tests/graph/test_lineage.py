"""The first-layer sketch and moments: exactly invariant to the symmetries; the sketch close for a fine-tuned relative,
far for another initialisation — on nets trained here and on the tiny zoo's own fine-tuned children, with symmetries
randomised."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from graph_nets import digits, forward_spec, trained
from torch_geometric.data import Batch

from raywse.core.artifacts import read_zoo_manifest
from raywse.eval.symmetries import randomised_graphs
from raywse.graph.lineage import first_layer_moments, first_layer_sketch
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import flip_hidden, permute_hidden, rescale_hidden
from raywse.models.baselines import FirstLayerSketchEmbedder

ARCHS = ("mlp", "cnn_gap", "cnn_bn")


def sketch(spec, *nets: dict[str, torch.Tensor], of=first_layer_sketch) -> torch.Tensor:
    return of(Batch.from_data_list([to_neural_graph(t, spec, str(i)) for i, t in enumerate(nets)]))


def train_on(spec, tensors: dict[str, torch.Tensor], shift: int, steps: int, lr: float, seed: int) -> dict:
    """Adam on digits from ``tensors``, labels shifted by ``shift`` (another label map: what a zoo child learns)."""
    tensors = {k: v.clone().requires_grad_("running" not in k) for k, v in tensors.items()}
    opt = torch.optim.Adam([t for t in tensors.values() if t.requires_grad], lr=lr)
    x, y = digits()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(x), (128,), generator=gen)
        loss = F.cross_entropy(forward_spec(spec, tensors, x[idx]), (y[idx] + shift) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach() for k, v in tensors.items()}


@pytest.mark.parametrize("of", [first_layer_sketch, first_layer_moments], ids=lambda f: f.__name__)
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_the_sketches_ignore_permutation_rescale_and_sign(arch, act, of):
    spec, tensors = trained(arch, act)
    gen = torch.Generator().manual_seed(3)
    twin = flip_hidden(tensors, spec, gen) if act == "tanh" else rescale_hidden(tensors, spec, gen)
    s = sketch(spec, tensors, permute_hidden(tensors, spec, gen), twin, of=of)
    assert s[0].norm() == pytest.approx(1.0, abs=1e-6)
    residual = float((s[1:] - s[0]).norm(dim=1).max())
    print(f"{arch}/{act}: largest change under a permutation and a {'flip' if act == 'tanh' else 'rescale'}: "
          f"{residual:.1e}")  # fmt: skip
    assert residual <= 1e-5


@pytest.mark.parametrize("arch", ARCHS)
def test_a_fine_tuned_child_keeps_its_parents_sketch_and_another_seed_does_not(arch):
    spec, parent = trained(arch, "relu")
    child = train_on(spec, parent, shift=1, steps=60, lr=3e-3, seed=1)
    gen = torch.Generator().manual_seed(11)  # another initialisation of the same architecture, trained alike
    fresh = {k: torch.randn(v.shape, generator=gen) * v.std() if "running" not in k else v for k, v in parent.items()}
    other = train_on(spec, fresh, shift=0, steps=50, lr=1e-2, seed=2)
    moved = max(float((child[k] - parent[k]).norm() / parent[k].norm()) for k in parent)
    s = sketch(spec, parent, child, other)
    kin, unrelated = float(s[0] @ s[1]), float(s[0] @ s[2])
    print(f"{arch}: weights moved <= {moved:.0%}; sketch cosine to the parent: child {kin:.3f}, other {unrelated:.3f}")
    assert moved > 0.05  # the child really trained on
    assert kin > 0.5 and kin > unrelated + 0.4  # a sharp kernel: only directions that nearly agree count


def test_on_the_tiny_zoo_a_childs_nearest_other_run_is_its_kin(tiny_zoo, tiny_graphs):
    """Every fine-tuned child of the tiny zoo, its hidden neurons randomly permuted and rescaled as the evaluation
    does: the model of another run whose sketch is closest is (nearly always) its parent's run or a sibling."""
    rows = read_zoo_manifest(tiny_zoo)
    graphs = randomised_graphs(tiny_zoo, rows, seed=0)
    z = FirstLayerSketchEmbedder().embed(graphs)
    run = np.array([r.get("run_id") or r["model_id"] for r in rows])
    parent = np.array([r.get("parent_id") or "" for r in rows])
    run_of = dict(zip([r["model_id"] for r in rows], run, strict=True))
    children = np.flatnonzero(parent != "")
    assert len(children) >= 10
    hits = []
    for q in children:
        sims = z @ z[q]
        sims[run == run[q]] = -np.inf  # its own run's snapshots are not the question
        best = int(np.argmax(sims))
        hits.append(run[best] == run_of[parent[q]] or parent[best] == parent[q])
    print(f"tiny zoo: nearest other-run model is kin for {np.mean(hits):.0%} of {len(children)} children")
    assert np.mean(hits) >= 0.9


@pytest.mark.parametrize(
    ("arch", "head"),
    [
        ("cnn_gap", [0.025760404765605927, -0.04756901413202286, 0.06126750633120537, -0.039721764624118805]),
        ("mlp", [-0.07452389597892761, 0.05710858479142189, 0.13037821650505066, 0.048663992434740067]),
    ],
)
def test_the_moments_are_drawn_as_they_always_were(arch, head):
    """An index stores probed networks with their moments: the first entries of these nets' moments, as the sketch
    of sessions 10–14 computed them, must not move, or such an index no longer meets its unprobed queries."""
    spec, tensors = trained(arch, "relu")
    np.testing.assert_allclose(sketch(spec, tensors, of=first_layer_moments)[0, :4].numpy(), head, atol=1e-4)
