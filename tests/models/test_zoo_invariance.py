"""The encoder's invariances (permutation, positive rescale, tanh sign flip) hold on real tiny-zoo checkpoints probed
on their datasets (one per family and hidden activation), and the order-reading baseline breaks on permuted twins."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import flip_hidden, flippable_layers, permute_hidden, rescalable_layers, rescale_hidden
from raywse.models.baselines import NonEquivariantEncoder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder
from raywse.zoo.arch import FAMILIES
from raywse.zoo.datasets import zoo_probes

# the default encoder, narrowed for speed (canonicalize_scale=True, the default, is kept)
SMALL = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def embed(encoder: NeuralGraphEncoder, graph) -> torch.Tensor:
    with torch.no_grad():
        return encoder(encoder.prepare(graph))


#: The issue's bar: twins' embeddings within 1e-5 relative on every family.
BAR = 1e-5


def make(cls) -> NeuralGraphEncoder:
    torch.manual_seed(0)
    return cls(SMALL).eval()


def hidden_activation(spec: ArchSpec) -> str:
    """The model's activation (a ResNet's sits on its batch norms and adds)."""
    return next((ly.activation for ly in spec.layers if ly.activation != "none"), "none")


@pytest.fixture(scope="module")
def zoo_checkpoints(tiny_zoo) -> dict[tuple[str, str], tuple[dict, ArchSpec, dict[str, torch.Tensor]]]:
    """``(family, hidden activation) -> (manifest row, spec, tensors)``: the first model of each combination."""
    out = {}
    for row in pq.read_table(tiny_zoo / "manifest.parquet").to_pylist():
        spec = ArchSpec.from_json(row["layer_spec"])
        key = (row["family"], hidden_activation(spec))
        if key not in out:
            out[key] = (row, spec, {k: v.float() for k, v in load_checkpoint(tiny_zoo / row["path"])[0].items()})
    assert {family for family, _ in out} == set(FAMILIES)
    assert any(flippable_layers(spec) for _, spec, _ in out.values())  # a tanh model is covered
    return out


def test_encoder_invariant_on_zoo_twins(zoo_checkpoints):
    for (family, act), (row, spec, tensors) in sorted(zoo_checkpoints.items()):
        probes = zoo_probes(row["dataset"], row["input_norm"])
        gen = torch.Generator().manual_seed(3)
        graph = to_neural_graph(tensors, spec, row["model_id"], probes)
        twins = {
            "permuted": permute_hidden(tensors, spec, gen),
            "rescaled": rescale_hidden(tensors, spec, gen) if rescalable_layers(spec) else None,
            "flipped": flip_hidden(tensors, spec, gen) if flippable_layers(spec) else None,
        }
        encoder = make(NeuralGraphEncoder)
        z = embed(encoder, graph)
        residuals = {}
        for name, twin in twins.items():
            if twin is not None:
                assert any(not torch.equal(twin[k], tensors[k]) for k in tensors), name
                residuals[name] = rel(embed(encoder, to_neural_graph(twin, spec, row["model_id"], probes)), z)
        baseline = make(NonEquivariantEncoder)
        permuted = to_neural_graph(twins["permuted"], spec, row["model_id"], probes)
        baseline_residual = rel(embed(baseline, permuted), embed(baseline, graph))
        print(f"{family}/{act} {row['model_id']}: {residuals}, non-equivariant permuted {baseline_residual:.2e}")
        assert max(residuals.values()) <= BAR
        assert baseline_residual > 20 * BAR  # the check can fail: a non-equivariant encoder misses the bar by far
