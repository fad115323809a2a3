"""The encoder on a GPU reads every kind of neural graph as on the CPU: zoo-style chains (MLP, CNN with batch norm),
BERT, GPT-2, ViT and bidirectional recurrent graphs, and graphs never run on probes (their first-layer sketch),
embed to the same vectors on CUDA as on the CPU (query form, as the index stores them, and as lineage queries) — with
``dense_blocks`` on (blocks on the CPU, the edge-list form on the GPU) and off (the edge list on both), and the
non-equivariant baseline (forward and backward). Runs where CUDA
is present (the lent GPU machine: ``python -m pytest --noconftest
tests/graph/test_cuda.py``); skipped elsewhere."""

from __future__ import annotations

import pytest
import torch
from graph_nets import trained
from test_bidirectional import net_and_spec
from test_gpt2 import tiny_gpt2
from test_transformer import tiny_bert
from test_vit import tiny_vit
from torch_geometric.data import Batch

from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.transforms import HideProbes
from raywse.models.baselines.nonequivariant import NonEquivariantEncoder
from raywse.models.encode import encode
from raywse.models.encoder import EncoderConfig, NeuralGraphEncoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def graphs() -> dict[str, object]:
    heads = {"num_attention_heads": 4, "n_head": 4}
    nets = {
        "mlp": trained("mlp", "relu"),
        "cnn_bn": trained("cnn_bn", "tanh"),
        "bert": infer_spec_and_tensors(tiny_bert(), heads),
        "gpt2": infer_spec_and_tensors(tiny_gpt2(), heads),
        "vit": infer_spec_and_tensors(tiny_vit(), heads),
        "bilstm": net_and_spec("lstm")[1:],
        "bigru": net_and_spec("gru")[1:],
    }
    out = {name: to_neural_graph(tensors, spec, name) for name, (spec, tensors) in nets.items()}
    for name in ("mlp", "cnn_bn", "vit"):  # never run on probes: the first-layer sketch is their fingerprint
        out[f"{name}_unprobed"] = HideProbes(1.0)(out[name], torch.Generator())
    return out


@pytest.mark.parametrize("kind", ["blocks", "edge_list", "nonequivariant"])
def test_cuda_embeddings_equal_cpu_embeddings_for_every_graph_kind(kind):
    """The main job's encoder (by blocks or by edge list) and the non-equivariant baseline, which the evaluation
    trains on the GPU too when the main job's training does."""
    torch.manual_seed(0)
    config = EncoderConfig(dense_blocks=kind == "blocks")
    encoder = (NonEquivariantEncoder(config) if kind == "nonequivariant" else NeuralGraphEncoder(config)).eval()
    for name, graph in graphs().items():
        batch = Batch.from_data_list([encoder.prepare(graph)])
        with torch.no_grad():
            cpu = encoder(batch)
            gpu = encoder.cuda()(batch.cuda()).cpu()
            encoder.cpu()
        assert torch.isfinite(gpu).all(), name
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5, msg=name)


def test_cuda_database_and_lineage_forms_equal_cpu_ones():
    """What the index stores and what a lineage query sends (first-layer sketch, moments, structure code) are
    computed on the GPU as on the CPU."""
    torch.manual_seed(0)
    encoder = NeuralGraphEncoder(EncoderConfig()).eval()
    prepared = [encoder.prepare(graph) for graph in graphs().values()]
    cpu = encode(encoder, prepared, database=True, kinship=True)
    gpu = encode(encoder.cuda(), prepared, database=True, kinship=True)
    for form in ("embeddings", "database", "kinship"):
        ours, theirs = getattr(gpu, form), getattr(cpu, form)
        assert abs(theirs).sum(axis=1).min() > 0, form
        torch.testing.assert_close(torch.from_numpy(ours), torch.from_numpy(theirs), rtol=1e-4, atol=1e-5, msg=form)


def test_cuda_training_step_of_the_nonequivariant_baseline():
    """A backward pass of the baseline on the GPU (its hidden-index embedding included) gives the CPU's gradients."""
    torch.manual_seed(0)
    encoder = NonEquivariantEncoder(EncoderConfig())
    batch = Batch.from_data_list([encoder.prepare(g) for g in graphs().values()])
    target = torch.randn(batch.num_graphs, encoder.output_dim)  # embeddings are unit vectors: a loss they can move
    grads = []
    for device in ("cpu", "cuda"):
        encoder.to(device).zero_grad()
        (encoder(batch.to(device)) * target.to(device)).sum().backward()
        assert encoder.index_emb.weight.grad.abs().sum() > 0
        grads.append(torch.cat([p.grad.flatten().cpu() for p in encoder.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-5 * float(grads[0].abs().max()))
