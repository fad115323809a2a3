"""Transformers: a BERT checkpoint named as Hugging Face names it is inferred (heads from its config.json) and computes
what ``nn.TransformerEncoderLayer`` (post-norm, GELU) computes with the same weights; its graph has a node per
neuron, query, key, value and layer-norm feature and an edge per weight; head and hidden permutations keep function
and embedding."""

from __future__ import annotations

import json

import pytest
import torch
from graph_nets import embedding_changes, seeded_tensors
from safetensors.torch import save_file
from torch import nn

from raywse.core.forward import forward
from raywse.core.spec import SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import graph_size, to_neural_graph
from raywse.graph.schema import NodeKind, NodeType
from raywse.graph.symmetry import permute_hidden

VOCAB, POSITIONS, TYPES, WIDTH, HEADS, FFN, LAYERS = 50, 20, 2, 16, 4, 32, 2
HINTS = {"num_attention_heads": HEADS, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}


def tiny_bert(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under Hugging Face ``BertModel`` names (with its ``position_ids`` buffer and a pooler)."""
    rand, norm = seeded_tensors(seed, WIDTH)

    t = {"embeddings.position_ids": torch.arange(POSITIONS).unsqueeze(0)}
    for table, rows in (("word", VOCAB), ("position", POSITIONS), ("token_type", TYPES)):
        t[f"embeddings.{table}_embeddings.weight"] = rand(rows, WIDTH)
    t |= norm("embeddings.LayerNorm")
    shapes = {"attention.self.query": (WIDTH, WIDTH), "attention.self.key": (WIDTH, WIDTH),
              "attention.self.value": (WIDTH, WIDTH), "attention.output.dense": (WIDTH, WIDTH),
              "intermediate.dense": (FFN, WIDTH), "output.dense": (WIDTH, FFN)}  # fmt: skip
    for i in range(LAYERS):
        for name, shape in shapes.items():
            t |= {f"encoder.layer.{i}.{name}.weight": rand(*shape), f"encoder.layer.{i}.{name}.bias": rand(shape[0])}
        t |= norm(f"encoder.layer.{i}.attention.output.LayerNorm") | norm(f"encoder.layer.{i}.output.LayerNorm")
    return t | {"pooler.dense.weight": rand(WIDTH, WIDTH), "pooler.dense.bias": rand(WIDTH)}


def reference(t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """BertModel's pooler output, computed with ``nn.TransformerEncoderLayer`` for the encoder layers."""
    emb = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][: ids.shape[1]]
    emb = emb + t["embeddings.token_type_embeddings.weight"][0]
    h = nn.functional.layer_norm(emb, (WIDTH,), t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], 1e-12)
    for i in range(LAYERS):
        p = f"encoder.layer.{i}"
        block = nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.0, activation="gelu", layer_norm_eps=1e-12,
                                           batch_first=True)  # fmt: skip
        qkv = [f"{p}.attention.self.{x}" for x in ("query", "key", "value")]
        block.load_state_dict({
            "self_attn.in_proj_weight": torch.cat([t[f"{n}.weight"] for n in qkv]),
            "self_attn.in_proj_bias": torch.cat([t[f"{n}.bias"] for n in qkv]),
            **{f"{mine}.{w}": t[f"{p}.{theirs}.{w}"] for mine, theirs in (
                ("self_attn.out_proj", "attention.output.dense"), ("linear1", "intermediate.dense"),
                ("linear2", "output.dense"), ("norm1", "attention.output.LayerNorm"), ("norm2", "output.LayerNorm"),
            ) for w in ("weight", "bias")},
        })  # fmt: skip
        h = block.eval()(h)
    return torch.tanh(nn.functional.linear(h[:, 0], t["pooler.dense.weight"], t["pooler.dense.bias"]))


def test_bert_is_inferred_and_computes_what_torch_transformer_layers_compute():
    tensors = tiny_bert()
    spec, inferred = infer_spec_and_tensors(tensors, HINTS)
    kinds = [ly.kind for ly in spec.layers]
    assert kinds[:3] == ["embedding", "layernorm", "attention"] and kinds[-2:] == ["first_step", "linear"]
    assert kinds.count("attention") == LAYERS and kinds.count("layernorm") == 1 + 2 * LAYERS
    assert "embeddings.position_ids" not in inferred  # a buffer, not a weight
    ids = torch.randint(0, VOCAB, (5, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = forward(spec, inferred, ids.float())
        torch.testing.assert_close(ours, reference(tensors, ids), rtol=1e-5, atol=1e-5)


def test_bert_graph_has_a_node_per_feature_and_an_edge_per_weight():
    spec, tensors = infer_spec_and_tensors(tiny_bert(), HINTS)
    g = to_neural_graph(tensors, spec, "bert")
    rows = VOCAB + POSITIONS + TYPES
    per_layer_nodes = 3 * WIDTH + WIDTH + WIDTH + FFN + WIDTH + WIDTH  # q k v, O, LN, W1, W2, LN
    assert g.num_nodes == rows + 2 * WIDTH + LAYERS * per_layer_nodes + WIDTH
    same_head = 2 * WIDTH * WIDTH // HEADS  # each query and key -> each value of its head
    per_layer_edges = 4 * WIDTH * WIDTH + same_head + 2 * WIDTH * FFN + 2 * WIDTH + 2 * WIDTH  # + identities, LN
    assert g.num_edges == rows * WIDTH + WIDTH + LAYERS * per_layer_edges + WIDTH * WIDTH
    assert graph_size(spec, tensors) == (g.num_nodes, g.num_edges)
    assert int((g.node_kind == NodeKind.INPUT).sum()) == rows and g.probe_source.startswith("tokens:50x")
    layer_norms = g.node_type == NodeType.LAYERNORM
    src, dst = g.edge_index
    into = layer_norms[dst]
    assert int(into.sum()) == (1 + 2 * LAYERS) * WIDTH  # one edge per feature, carrying its scale
    torch.testing.assert_close(g.edge_attr[into][:WIDTH, 0], tensors["embeddings.LayerNorm.weight"])
    assert int((g.node_type == NodeType.ATTENTION_QUERY).sum()) == LAYERS * WIDTH
    assert torch.isfinite(g.probe_act).all() and g.probe_act[g.node_kind != NodeKind.INPUT].abs().sum() > 0


def test_head_and_hidden_permutations_keep_function_and_embedding():
    spec, tensors = infer_spec_and_tensors(tiny_bert(), HINTS)
    gen = torch.Generator().manual_seed(2)
    twin = permute_hidden(tensors, spec, gen)
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(twin[query], tensors[query])  # heads moved
    ffn = "encoder.layer.1.intermediate.dense.weight"
    assert not torch.equal(twin[ffn], tensors[ffn])
    # the residual stream (embeddings, every layer norm and residual output: one permutation) is hidden: the pooler
    # reads it
    words = "embeddings.word_embeddings.weight"
    assert not torch.equal(twin[words], tensors[words]) and torch.equal(
        twin[words].sort(1)[0], tensors[words].sort(1)[0]
    )
    ids = torch.randint(0, VOCAB, (4, 10), generator=gen).float()
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, twin, ids), forward(spec, tensors, ids), rtol=1e-4, atol=1e-5)
    permuted, other = embedding_changes(spec, tensors, twin, dict(tensors, **{query: tensors[query] * 1.5}))
    assert permuted < 1e-4 and other > 1e-3


def test_bert_files_take_their_heads_from_config_json_and_are_refused_without(tmp_path):
    tensors = tiny_bert()
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(GraphifyError, match="attention heads is not in its names; put the model's config.json"):
        graphify_checkpoint(str(tmp_path / "model.safetensors"), "bert")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", **HINTS}))
    g = graphify_checkpoint(str(tmp_path / "model.safetensors"), "bert")
    assert g.num_nodes == graph_size(*infer_spec_and_tensors(tensors, HINTS))[0]
    with pytest.raises(SpecError, match="tensor encoder.layer.0.attention.self.extra.weight is outside BERT's"):
        infer_spec_and_tensors({**tensors, "encoder.layer.0.attention.self.extra.weight": torch.ones(2)}, HINTS)
