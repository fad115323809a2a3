"""The encoder's invariances hold on real tiny-zoo checkpoints (one per family), and the order-reading baseline
breaks on the same permuted twins."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch

from raywse.core.io import load_checkpoint
from raywse.core.spec import ArchSpec
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.symmetry import permute_hidden, rescalable_layers, rescale_hidden
from raywse.models.baselines import NonEquivariantEncoder
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

# the default encoder, narrowed for speed (canonicalize_scale=True, the default, is kept)
SMALL = EncoderConfig(depth=2, hidden=32, edge_hidden=16, embed_dim=16)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def embed(encoder: NeuralGraphEncoder, graph) -> torch.Tensor:
    with torch.no_grad():
        return encoder(encoder.prepare(graph))


def make(cls) -> NeuralGraphEncoder:
    torch.manual_seed(0)
    return cls(SMALL).eval()


@pytest.fixture(scope="module")
def zoo_checkpoints(tiny_zoo) -> dict[str, tuple[str, ArchSpec, dict[str, torch.Tensor]]]:
    """``family -> (model_id, spec, tensors)``: per family, the first model with rescalable hidden layers."""
    out = {}
    for row in pq.read_table(tiny_zoo / "manifest.parquet").to_pylist():
        spec = ArchSpec.from_json(row["layer_spec"])
        if row["family"] not in out and rescalable_layers(spec):
            out[row["family"]] = (row["model_id"], spec, load_checkpoint(tiny_zoo / row["path"])[0])
    assert set(out) == {"mlp", "cnn"}
    return out


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_encoder_invariant_on_zoo_twins(family, zoo_checkpoints):
    model_id, spec, tensors = zoo_checkpoints[family]
    gen = torch.Generator().manual_seed(3)
    graph = to_neural_graph(tensors, spec, model_id)
    permuted = to_neural_graph(permute_hidden(tensors, spec, gen), spec, model_id)
    rescaled = to_neural_graph(rescale_hidden(tensors, spec, gen), spec, model_id)
    assert not torch.equal(graph.edge_attr, permuted.edge_attr) and not torch.equal(graph.x, rescaled.x)

    encoder = make(NeuralGraphEncoder)
    z = embed(encoder, graph)
    perm_residual, scale_residual = rel(embed(encoder, permuted), z), rel(embed(encoder, rescaled), z)
    baseline = make(NonEquivariantEncoder)
    baseline_residual = rel(embed(baseline, permuted), embed(baseline, graph))
    print(
        f"{family} {model_id}: permuted {perm_residual:.2e}, rescaled {scale_residual:.2e}, "
        f"non-equivariant permuted {baseline_residual:.2e}"
    )
    assert perm_residual <= 1e-5
    assert scale_residual <= 1e-4  # float32 rounding of the rescaled weights survives canonicalisation
    assert baseline_residual > 1e-3
