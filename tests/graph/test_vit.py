"""ViT: a checkpoint named as Hugging Face names it (``transformers`` 5 names, or the 4.x names most saved checkpoints
use; a ``vit.`` prefix with a classifier head) is inferred (heads from its config.json) and computes what a patch conv,
a class token, a position table and pre-norm ``nn.TransformerEncoderLayer`` s compute with the same weights; its graph
has the image channels, the class-token row and the position rows as inputs, and head and hidden permutations keep
function and embedding."""

from __future__ import annotations

import dataclasses
import json
import re

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
from raywse.graph.schema import NodeKind, NodeType
from raywse.graph.symmetry import permute_hidden

CHANNELS, SIDE, PATCH, WIDTH, HEADS, FFN, LAYERS = 2, 8, 4, 16, 4, 32, 2
PATCHES = (SIDE // PATCH) ** 2
HINTS = {"num_attention_heads": HEADS, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}


def tiny_vit(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under ``transformers`` 5's ``ViTModel`` names, with a pooler."""
    rand, norm = seeded_tensors(seed, WIDTH)

    t = {"embeddings.cls_token": rand(1, 1, WIDTH), "embeddings.position_embeddings": rand(1, PATCHES + 1, WIDTH),
         "embeddings.patch_embeddings.projection.weight": rand(WIDTH, CHANNELS, PATCH, PATCH),
         "embeddings.patch_embeddings.projection.bias": rand(WIDTH)}  # fmt: skip
    shapes = {f"attention.{p}_proj": (WIDTH, WIDTH) for p in "qkvo"} | {"mlp.fc1": (FFN, WIDTH),
                                                                       "mlp.fc2": (WIDTH, FFN)}  # fmt: skip
    for i in range(LAYERS):
        for name, shape in shapes.items():
            t |= {f"layers.{i}.{name}.weight": rand(*shape), f"layers.{i}.{name}.bias": rand(shape[0])}
        t |= norm(f"layers.{i}.layernorm_before") | norm(f"layers.{i}.layernorm_after")
    return t | norm("layernorm") | {"pooler.dense.weight": rand(WIDTH, WIDTH), "pooler.dense.bias": rand(WIDTH)}


def as_transformers_4(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights under the 4.x names (``encoder.layer.{i}.attention.attention.query``, …)."""
    renames = ((r"^layers\.(\d+)\.attention\.q_proj\.", r"encoder.layer.\1.attention.attention.query."),
               (r"^layers\.(\d+)\.attention\.k_proj\.", r"encoder.layer.\1.attention.attention.key."),
               (r"^layers\.(\d+)\.attention\.v_proj\.", r"encoder.layer.\1.attention.attention.value."),
               (r"^layers\.(\d+)\.attention\.o_proj\.", r"encoder.layer.\1.attention.output.dense."),
               (r"^layers\.(\d+)\.mlp\.fc1\.", r"encoder.layer.\1.intermediate.dense."),
               (r"^layers\.(\d+)\.mlp\.fc2\.", r"encoder.layer.\1.output.dense."),
               (r"^layers\.(\d+)\.(layernorm_\w+)\.", r"encoder.layer.\1.\2."))  # fmt: skip
    out = {}
    for name, value in t.items():
        for pattern, replacement in renames:
            name = re.sub(pattern, replacement, name)
        out[name] = value
    return out


def reference(t: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """ViTModel's pooler output, computed with a conv and pre-norm ``nn.TransformerEncoderLayer`` s."""
    patches = nn.functional.conv2d(images, t["embeddings.patch_embeddings.projection.weight"],
                                   t["embeddings.patch_embeddings.projection.bias"], stride=PATCH)  # fmt: skip
    h = patches.flatten(2).transpose(1, 2)
    h = torch.cat([t["embeddings.cls_token"].expand(len(h), 1, WIDTH), h], dim=1) + t["embeddings.position_embeddings"]
    for i in range(LAYERS):
        p = f"layers.{i}"
        block = nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.0, activation="gelu", layer_norm_eps=1e-12,
                                           batch_first=True, norm_first=True)  # fmt: skip
        qkv = [f"{p}.attention.{x}_proj" for x in "qkv"]
        block.load_state_dict({
            "self_attn.in_proj_weight": torch.cat([t[f"{n}.weight"] for n in qkv]),
            "self_attn.in_proj_bias": torch.cat([t[f"{n}.bias"] for n in qkv]),
            **{f"{mine}.{w}": t[f"{p}.{theirs}.{w}"] for mine, theirs in (
                ("self_attn.out_proj", "attention.o_proj"), ("linear1", "mlp.fc1"), ("linear2", "mlp.fc2"),
                ("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
            ) for w in ("weight", "bias")},
        })  # fmt: skip
        h = block.eval()(h)
    h = nn.functional.layer_norm(h, (WIDTH,), t["layernorm.weight"], t["layernorm.bias"], 1e-12)
    return torch.tanh(nn.functional.linear(h[:, 0], t["pooler.dense.weight"], t["pooler.dense.bias"]))


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, CHANNELS, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def test_vit_is_inferred_under_both_namings_and_computes_what_torch_layers_compute():
    tensors = tiny_vit()
    spec, inferred = infer_spec_and_tensors(tensors, HINTS)
    kinds = [ly.kind for ly in spec.layers]
    assert kinds[:3] == ["patch_embedding", "layernorm", "attention"] and kinds[-3:] == ["layernorm", "first_step",
                                                                                          "linear"]  # fmt: skip
    assert spec.input_shape == (CHANNELS, SIDE, SIDE) and spec.layers[0].stride == PATCH
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, inferred, images(5)), reference(tensors, images(5)), rtol=1e-5,
                                   atol=1e-5)  # fmt: skip
    old_spec, old = infer_spec_and_tensors({f"vit.{n}": t for n, t in as_transformers_4(tensors).items()}, HINTS)
    assert old_spec == spec and old.keys() == inferred.keys() and all(torch.equal(old[n], inferred[n]) for n in old)


def test_a_classifier_head_is_the_output_and_a_grid_must_be_square_or_given():
    head = {"classifier.weight": torch.randn(3, WIDTH), "classifier.bias": torch.randn(3)}
    without_pooler = {f"vit.{n}": t for n, t in tiny_vit().items() if not n.startswith("pooler.")}
    spec, _ = infer_spec_and_tensors(without_pooler | head, HINTS)
    assert spec.layers[-1].name == "classifier" and spec.layers[-1].activation == "none"
    with pytest.raises(SpecError, match="both a pooler and a classifier"):
        infer_spec_and_tensors({f"vit.{n}": t for n, t in tiny_vit().items()} | head, HINTS)
    tensors = tiny_vit()
    tensors["embeddings.position_embeddings"] = torch.randn(1, 2 * 4 + 1, WIDTH)  # a 2x4 grid: not square
    with pytest.raises(SpecError, match="8 patches are not a square grid"):
        infer_spec_and_tensors(tensors, HINTS)
    spec, _ = infer_spec_and_tensors(tensors, HINTS | {"image_size": [2 * PATCH, 4 * PATCH]})
    assert spec.input_shape == (CHANNELS, 2 * PATCH, 4 * PATCH)


def test_vit_graph_has_the_image_channels_and_the_table_rows_as_inputs():
    spec, tensors = infer_spec_and_tensors(tiny_vit(), HINTS)
    g = to_neural_graph(tensors, spec, "vit")
    inputs = CHANNELS + 1 + PATCHES + 1  # channels, the class token's row, the position rows
    per_layer_nodes = WIDTH + 3 * WIDTH + WIDTH + WIDTH + FFN + WIDTH  # LN, q k v, o_proj, LN, fc1, fc2
    assert g.num_nodes == inputs + WIDTH + LAYERS * per_layer_nodes + WIDTH + WIDTH  # + final LN, pooler
    same_head = 2 * WIDTH * WIDTH // HEADS
    per_layer_edges = WIDTH + 4 * WIDTH * WIDTH + same_head + WIDTH + WIDTH + 2 * WIDTH * FFN + WIDTH
    assert g.num_edges == inputs * WIDTH + LAYERS * per_layer_edges + WIDTH + WIDTH * WIDTH
    assert graph_size(spec, tensors) == (g.num_nodes, g.num_edges)
    assert int((g.node_kind == NodeKind.INPUT).sum()) == inputs
    embedding = (g.node_type == NodeType.EMBEDDING).nonzero().flatten()
    torch.testing.assert_close(g.x[embedding, 0], tensors["embeddings.projection.bias"])
    src, dst = g.edge_index
    from_class_row = (src == CHANNELS) & (dst >= embedding[0]) & (dst <= embedding[-1])
    assert int(from_class_row.sum()) == WIDTH and g.edge_attr.shape[1] == 9  # 4x4 patch kernels, resampled to 3x3
    torch.testing.assert_close(g.edge_attr[from_class_row][:, 4], tensors["embeddings.cls_token"])
    assert g.probe_source.startswith("gaussian:") and torch.isfinite(g.probe_act).all()
    assert blocks_vs_reference(g) < 1e-5  # the dense-block encoder reads this graph as the reference does


def test_head_and_hidden_permutations_keep_function_and_embedding():
    spec, tensors = infer_spec_and_tensors(tiny_vit(), HINTS)
    twin = permute_hidden(tensors, spec, torch.Generator().manual_seed(2))
    for name in ("layers.0.attention.query.weight", "layers.1.mlp.fc1.weight", "embeddings.cls_token",
                 "embeddings.position_embeddings", "embeddings.projection.weight"):  # fmt: skip
        assert not torch.equal(twin[name], tensors[name])  # heads, hidden neurons and the residual stream moved
    with torch.no_grad():
        torch.testing.assert_close(forward(spec, twin, images(4)), forward(spec, tensors, images(4)), rtol=1e-4,
                                   atol=1e-5)  # fmt: skip
    permuted, other = embedding_changes(spec, tensors, twin, infer_spec_and_tensors(tiny_vit(seed=1), HINTS)[1])
    assert permuted < 1e-4 and other > 1e-3


def test_vit_files_take_their_heads_from_config_json_and_are_refused_without(tmp_path):
    save_file(tiny_vit(), tmp_path / "model.safetensors")
    with pytest.raises(GraphifyError, match="attention heads is not in its names; put the model's config.json"):
        graphify_checkpoint(str(tmp_path / "model.safetensors"), "vit")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit", **HINTS, "image_size": SIDE}))
    g = graphify_checkpoint(str(tmp_path / "model.safetensors"), "vit")
    assert g.num_nodes == graph_size(*infer_spec_and_tensors(tiny_vit(), HINTS))[0]
    with pytest.raises(SpecError, match="tensor layers.0.mlp.extra.weight is outside ViT's layout"):
        infer_spec_and_tensors({**tiny_vit(), "layers.0.mlp.extra.weight": torch.ones(2)}, HINTS)


def test_non_square_patches_and_a_padded_patch_embedding_are_refused_in_one_line():
    tensors = tiny_vit()
    tensors["embeddings.patch_embeddings.projection.weight"] = torch.randn(WIDTH, CHANNELS, PATCH, PATCH // 2)
    with pytest.raises(SpecError, match="non-square 4x2 patches are not supported"):
        infer_spec_and_tensors(tensors, HINTS)
    spec, inferred = infer_spec_and_tensors(tiny_vit(), HINTS)
    padded = ArchSpec(spec.input_shape, (dataclasses.replace(spec.layers[0], padding=1), *spec.layers[1:]))
    with pytest.raises(SpecError, match="padding 1: a patch embedding's patches do not overlap the border"):
        padded.validate(inferred)
