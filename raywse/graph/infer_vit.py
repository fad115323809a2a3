"""Spec inference for Hugging Face ViT checkpoints, as :mod:`raywse.graph.infer` hands them over: ``ViTModel``'s
names in ``transformers`` 5 (``layers.{i}.attention.q_proj``, ``layers.{i}.mlp.fc1``, …) and in the 4.x releases most
saved checkpoints use (``encoder.layer.{i}.attention.attention.query``, ``…intermediate.dense``, …); a ``vit.`` prefix
with ``ViTForImageClassification``'s ``classifier`` head outside it.

A ViT layer is pre-norm: ``h = h + O(attention(LN_before(h)))``, then ``h = h + W2 act(W1 LN_after(h))``; the image
enters through a ``patch_embedding`` (the patch conv, the class token first, the position table added) and leaves
through the final ``layernorm`` read at the class token's position, then the ``pooler`` (``tanh``) or the
``classifier`` when there is one. The number of heads comes from the model's ``config.json``
(``num_attention_heads``, with ``layer_norm_eps``, ``hidden_act``, ``pooler_act`` and ``image_size``: without it the
patch grid is taken to be square). Query, key or value biases a checkpoint leaves out (``qkv_bias: false``) read as
zeros.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.infer_hf import BlockNames, block_layers, config_eps, config_heads, hf_activation

_PROJECTION = "embeddings.patch_embeddings.projection.weight"
#: ``transformers`` 4.x names → the 5.x names the spec uses.
_RENAMES = (
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(q|k|v)(?:uery|ey|alue)\."),
     r"layers.\1.attention.\2_proj."),
    (re.compile(r"^encoder\.layer\.(\d+)\.attention\.output\.dense\."), r"layers.\1.attention.o_proj."),
    (re.compile(r"^encoder\.layer\.(\d+)\.intermediate\.dense\."), r"layers.\1.mlp.fc1."),
    (re.compile(r"^encoder\.layer\.(\d+)\.output\.dense\."), r"layers.\1.mlp.fc2."),
    (re.compile(r"^encoder\.layer\.(\d+)\.(layernorm_before|layernorm_after)\."), r"layers.\1.\2."),
)  # fmt: skip
_LAYER = re.compile(r"^layers\.(\d+)\.")


def is_vit(tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether the tensors are named as Hugging Face's ``ViTModel`` names them."""
    return any(n.endswith(_PROJECTION) for n in tensors) and any(n.endswith("embeddings.cls_token") for n in tensors)


def vit_spec_and_tensors(
    tensors: Mapping[str, torch.Tensor], hints: Mapping[str, object]
) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec of a ViT checkpoint and its tensors under the spec's names; :class:`SpecError` for a tensor outside
    ViT's layout, or without ``num_attention_heads`` in ``hints`` (the model's ``config.json``)."""
    prefix = next(n for n in tensors if n.endswith(_PROJECTION))[: -len(_PROJECTION)]
    src = {_renamed(n[len(prefix) :]): t for n, t in tensors.items() if n.startswith(prefix)}
    head = {n: t for n, t in tensors.items() if n in ("classifier.weight", "classifier.bias")}
    stray = sorted(n for n in tensors if not n.startswith(prefix) and n not in head)
    if stray:
        raise SpecError(f"tensor {stray[0]} is outside ViT's layout (everything else is under {prefix!r})")
    heads = config_heads(hints, "num_attention_heads", "ViT")
    act, eps = hf_activation(hints.get("hidden_act", "gelu")), config_eps(hints, "layer_norm_eps", 1e-12)
    projection = src.pop("embeddings.patch_embeddings.projection.weight")
    table = src.pop("embeddings.position_embeddings", None)
    if table is None or projection.dim() != 4:
        raise SpecError(f"{prefix}embeddings: a 4-D patch projection and a position table are needed")
    if projection.shape[2] != projection.shape[3]:
        raise SpecError(f"{prefix}embeddings: non-square {projection.shape[2]}x{projection.shape[3]} patches are not "
                        "supported")  # fmt: skip
    out = {"embeddings.projection.weight": projection,
           "embeddings.cls_token": src.pop("embeddings.cls_token").reshape(-1),
           "embeddings.position_embeddings": table.reshape(-1, projection.shape[0])}  # fmt: skip
    out["embeddings.projection.bias"] = src.pop("embeddings.patch_embeddings.projection.bias", None)
    layers = [Layer("patch_embedding", "embeddings", stride=int(projection.shape[-1]))]
    stream = "embeddings"  # what the next residual connection reads
    for i in sorted({int(m.group(1)) for n in src if (m := _LAYER.match(n))}):
        p = f"layers.{i}"
        for mine, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            weight = src.pop(f"{p}.attention.{theirs}.weight", None)
            out[f"{p}.attention.{mine}.weight"] = weight
            bias = src.pop(f"{p}.attention.{theirs}.bias", None)
            if bias is None and weight is not None:  # qkv_bias: false
                bias = weight.new_zeros(len(weight))
            out[f"{p}.attention.{mine}.bias"] = bias
        names = BlockNames(f"{p}.attention", f"{p}.attention.o_proj", f"{p}.mlp.fc1", f"{p}.mlp.fc2",
                           f"{p}.layernorm_before", f"{p}.layernorm_after")  # fmt: skip
        block, stream = block_layers(names, stream, heads, act, eps, pre_norm=True)
        layers += block
    layers += [Layer("layernorm", "layernorm", eps=eps), Layer("first_step")]
    if head and "pooler.dense.weight" in src:
        raise SpecError("a ViT with both a pooler and a classifier: which one is the output is not in its names")
    if head:
        layers.append(Layer("linear", "classifier"))
    elif "pooler.dense.weight" in src:
        layers.append(Layer("linear", "pooler.dense", hf_activation(hints.get("pooler_act", "tanh"))))
    out |= head | src
    out = {n: t for n, t in out.items() if t is not None}
    spec = ArchSpec(_input_shape(projection, len(out["embeddings.position_embeddings"]), hints), tuple(layers))
    extra = sorted(set(out) - set(spec.tensor_names()), key=len)
    if extra:
        raise SpecError(f"tensor {prefix}{extra[0]} is outside ViT's layout")
    spec.validate(out)
    return spec, {n: t.float() for n, t in out.items()}


def _renamed(name: str) -> str:
    for pattern, replacement in _RENAMES:
        name = pattern.sub(replacement, name)
    return name


def _input_shape(projection: torch.Tensor, positions: int, hints: Mapping[str, object]) -> tuple[int, int, int]:
    """``[C, H, W]``: ``image_size`` from the hints, else the square image whose patch grid has ``positions - 1``
    patches."""
    size = hints.get("image_size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return (int(projection.shape[1]), size, size)
    if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size):
        return (int(projection.shape[1]), int(size[0]), int(size[1]))
    side = math.isqrt(max(positions - 1, 0))
    if side * side != positions - 1 or side == 0:
        raise SpecError(f"a ViT whose {positions - 1} patches are not a square grid: put its config.json "
                        "(image_size) next to it")  # fmt: skip
    return (int(projection.shape[1]), side * int(projection.shape[2]), side * int(projection.shape[3]))
