"""GPT-2: a checkpoint named as Hugging Face names it (``Conv1D`` projections, fused ``c_attn``, an optional
``transformer.`` prefix with a tied ``lm_head``) is inferred (heads from its config.json) and computes what pre-norm,
causal ``nn.TransformerEncoderLayer`` s compute with the same weights; its graph has a node per feature and an edge per
weight, marks the causal attention in its node types, and head and hidden permutations keep function and embedding."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from graph_nets import blocks_vs_reference, embedding_changes, seeded_tensors
from safetensors.torch import save_file
from torch import nn

from raywse.core.forward import forward
from raywse.core.spec import ArchSpec, SpecError
from raywse.graph.checkpoint import GraphifyError, graphify_checkpoint
from raywse.graph.infer import infer_spec_and_tensors
from raywse.graph.neural_graph import graph_size, to_neural_graph
from raywse.graph.schema import NodeType
from raywse.graph.symmetry import permute_hidden

VOCAB, POSITIONS, WIDTH, HEADS, FFN, LAYERS = 50, 20, 16, 4, 32, 2
HINTS = {"n_head": HEADS, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}


def tiny_gpt2(seed: int = 0, prefix: str = "") -> dict[str, torch.Tensor]:
    """Random weights under Hugging Face ``GPT2Model`` names (``Conv1D`` weights are ``[in, out]``), with the causal
    mask buffer older ``transformers`` versions saved."""
    rand, norm = seeded_tensors(seed, WIDTH)

    t = {"wte.weight": rand(VOCAB, WIDTH), "wpe.weight": rand(POSITIONS, WIDTH)}
    conv1d = {"attn.c_attn": (WIDTH, 3 * WIDTH), "attn.c_proj": (WIDTH, WIDTH), "mlp.c_fc": (WIDTH, FFN),
              "mlp.c_proj": (FFN, WIDTH)}  # fmt: skip
    for i in range(LAYERS):
        for name, shape in conv1d.items():
            t |= {f"h.{i}.{name}.weight": rand(*shape), f"h.{i}.{name}.bias": rand(shape[1])}
        t |= norm(f"h.{i}.ln_1") | norm(f"h.{i}.ln_2")
        t[f"h.{i}.attn.bias"] = torch.tril(torch.ones(POSITIONS, POSITIONS)).view(1, 1, POSITIONS, POSITIONS)
    t |= norm("ln_f")
    return {f"{prefix}{n}": v for n, v in t.items()}


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's ``gelu_new`` (a function, not ``nn.GELU``: the layer's fast path would run the exact GELU)."""
    return nn.functional.gelu(x, approximate="tanh")


def reference(t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """GPT2Model's last hidden state averaged over positions, computed with pre-norm ``nn.TransformerEncoderLayer`` s
    under a causal mask."""
    h = t["wte.weight"][ids] + t["wpe.weight"][: ids.shape[1]]
    mask = nn.Transformer.generate_square_subsequent_mask(ids.shape[1])
    for i in range(LAYERS):
        p = f"h.{i}"
        block = nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.0, layer_norm_eps=1e-5, batch_first=True,
                                           norm_first=True, activation=gelu_tanh)  # fmt: skip
        block.load_state_dict({
            "self_attn.in_proj_weight": t[f"{p}.attn.c_attn.weight"].T,
            "self_attn.in_proj_bias": t[f"{p}.attn.c_attn.bias"],
            **{f"{mine}.weight": t[f"{p}.{theirs}.weight"].T for mine, theirs in (
                ("self_attn.out_proj", "attn.c_proj"), ("linear1", "mlp.c_fc"), ("linear2", "mlp.c_proj"))},
            **{f"{mine}.bias": t[f"{p}.{theirs}.bias"] for mine, theirs in (
                ("self_attn.out_proj", "attn.c_proj"), ("linear1", "mlp.c_fc"), ("linear2", "mlp.c_proj"))},
            **{f"{mine}.{w}": t[f"{p}.{theirs}.{w}"] for mine, theirs in (("norm1", "ln_1"), ("norm2", "ln_2"))
               for w in ("weight", "bias")},
        })  # fmt: skip
        h = block.eval()(h, src_mask=mask, is_causal=True)
    return nn.functional.layer_norm(h, (WIDTH,), t["ln_f.weight"], t["ln_f.bias"], 1e-5).mean(1)


def test_gpt2_is_inferred_and_computes_what_causal_pre_norm_layers_compute():
    tensors = tiny_gpt2()
    spec, inferred = infer_spec_and_tensors(tensors, HINTS)
    kinds = [ly.kind for ly in spec.layers]
    assert kinds[:3] == ["embedding", "layernorm", "attention"] and kinds[-2:] == ["layernorm", "global_avg_pool"]
    assert all(ly.causal for ly in spec.layers if ly.kind == "attention") and kinds.count("attention") == LAYERS
    assert {ly.activation for ly in spec.layers if ly.name.endswith("c_fc")} == {"gelu_tanh"}
    assert "h.0.attn.bias" not in inferred  # the causal-mask buffer is not a weight
    ids = torch.randint(0, VOCAB, (5, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = forward(spec, inferred, ids.float())
        torch.testing.assert_close(ours, reference(tensors, ids), rtol=1e-5, atol=1e-5)
        # the same weights without the mask compute something else: the mask is part of the function
        free = ArchSpec(spec.input_shape, tuple(replace(ly, causal=False) for ly in spec.layers))
        assert (forward(free, inferred, ids.float()) - ours).abs().max() > 1e-2


def test_a_language_model_head_tied_to_the_token_table_is_the_same_network():
    tensors = tiny_gpt2(prefix="transformer.")
    tied = {**tensors, "lm_head.weight": tensors["transformer.wte.weight"].clone()}
    spec, inferred = infer_spec_and_tensors(tied, HINTS)
    plain_spec, plain = infer_spec_and_tensors(tiny_gpt2(), HINTS)
    assert (
        spec == plain_spec
        and all(torch.equal(inferred[n], plain[n]) for n in plain)
        and inferred.keys() == plain.keys()
    )
    with pytest.raises(SpecError, match="lm_head.weight is not tied to transformer.wte.weight"):
        infer_spec_and_tensors({**tied, "lm_head.weight": tied["lm_head.weight"] + 1}, HINTS)
    with pytest.raises(SpecError, match="tensor h.0.mlp.extra.weight is outside GPT-2's layout"):
        infer_spec_and_tensors({**tiny_gpt2(), "h.0.mlp.extra.weight": torch.ones(2)}, HINTS)


def test_gpt2_graph_has_a_node_per_feature_and_an_edge_per_weight():
    spec, tensors = infer_spec_and_tensors(tiny_gpt2(), HINTS)
    g = to_neural_graph(tensors, spec, "gpt2")
    rows = VOCAB + POSITIONS + 1  # GPT-2 has no token types: one row of zeros stands for them
    per_layer_nodes = WIDTH + 3 * WIDTH + WIDTH + WIDTH + FFN + WIDTH  # ln_1, q k v, c_proj, ln_2, c_fc, c_proj
    assert g.num_nodes == rows + WIDTH + LAYERS * per_layer_nodes + WIDTH
    same_head = 2 * WIDTH * WIDTH // HEADS  # each query and key -> each value of its head
    per_layer_edges = WIDTH + 4 * WIDTH * WIDTH + same_head + WIDTH + WIDTH + 2 * WIDTH * FFN + WIDTH
    assert g.num_edges == rows * WIDTH + LAYERS * per_layer_edges + WIDTH
    assert graph_size(spec, tensors) == (g.num_nodes, g.num_edges)
    assert int((g.node_type == NodeType.ATTENTION_CAUSAL_VALUE).sum()) == LAYERS * WIDTH
    assert int((g.node_type == NodeType.ATTENTION_VALUE).sum()) == 0
    assert torch.isfinite(g.probe_act).all() and g.probe_source.startswith("tokens:")
    assert blocks_vs_reference(g) < 1e-5  # the dense-block encoder reads this graph as the reference does


def test_head_and_hidden_permutations_keep_function_and_embedding_and_the_mask_is_seen():
    spec, tensors = infer_spec_and_tensors(tiny_gpt2(), HINTS)
    gen = torch.Generator().manual_seed(2)
    twin = permute_hidden(tensors, spec, gen)
    for name in ("h.0.attn.query.weight", "h.1.mlp.c_fc.weight"):  # heads and hidden neurons moved
        assert not torch.equal(twin[name], tensors[name])
    # the residual stream is tied through ln_f to the outputs, which keep their identity: it stays in place
    assert torch.equal(twin["embeddings.word_embeddings.weight"], tensors["embeddings.word_embeddings.weight"])
    ids = torch.randint(0, VOCAB, (4, 10), generator=gen).float()
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, twin, ids), forward(spec, tensors, ids), rtol=1e-4, atol=1e-5)
    another = infer_spec_and_tensors(tiny_gpt2(seed=1), HINTS)[1]
    permuted, other = embedding_changes(spec, tensors, twin, another)
    assert permuted < 1e-4 and other > 1e-3
    free = ArchSpec(spec.input_shape, tuple(replace(ly, causal=False) for ly in spec.layers))
    graphs = [to_neural_graph(tensors, s, "gpt2") for s in (spec, free)]
    assert not torch.equal(graphs[0].node_type, graphs[1].node_type)  # the encoder reads the mask from node types


def test_gpt2_files_take_their_heads_from_config_json_and_are_refused_without(tmp_path):
    save_file(tiny_gpt2(), tmp_path / "model.safetensors")
    with pytest.raises(GraphifyError, match="attention heads is not in its names; put the model's config.json"):
        graphify_checkpoint(str(tmp_path / "model.safetensors"), "gpt2")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", **HINTS}))
    g = graphify_checkpoint(str(tmp_path / "model.safetensors"), "gpt2")
    assert g.num_nodes == graph_size(*infer_spec_and_tensors(tiny_gpt2(), HINTS))[0]


def test_attention_scaled_otherwise_is_refused():
    for hint in ({"scale_attn_weights": False}, {"scale_attn_by_inverse_layer_idx": True}):
        with pytest.raises(SpecError, match="attention scores scaled other than by 1/sqrt"):
            infer_spec_and_tensors(tiny_gpt2(), HINTS | hint)
