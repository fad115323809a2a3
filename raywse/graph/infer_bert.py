"""Spec inference for Hugging Face BERT checkpoints (``embeddings.*``, ``encoder.layer.{i}.attention.self.query.*``,
…, an optional ``pooler.dense``; a ``bert.`` prefix is dropped), as :mod:`raywse.graph.infer` hands them over.

A BERT layer is post-norm: ``h = LN(h + O(attention(h)))``, then ``h = LN(h + W2 act(W1 h))``; the spec spells it
with an ``attention`` layer, ``add`` layers reading the previous layer norm, and ``layernorm`` layers. The pooler (a
``tanh`` linear layer on the first position, the [CLS] token) is the output when present, else the last hidden state
averaged over positions. Names cannot tell the number of attention heads: it comes from the model's ``config.json``
(``num_attention_heads``, with ``layer_norm_eps`` and ``hidden_act``), read next to the checkpoint by
:func:`raywse.graph.checkpoint.graphify_checkpoint`. The input is :data:`NOMINAL_TOKENS` token ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.infer_hf import NOMINAL_TOKENS, BlockNames, block_layers, config_eps, config_heads, hf_activation

_WORDS = "embeddings.word_embeddings.weight"
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")
#: Buffers a BERT checkpoint may carry that are not weights.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


def is_bert(tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether the tensors are named as Hugging Face's ``BertModel`` names them."""
    return any(n.endswith(_WORDS) for n in tensors) and any(".attention.self.query.weight" in n for n in tensors)


def bert_spec_and_tensors(
    tensors: Mapping[str, torch.Tensor], hints: Mapping[str, object]
) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec of a BERT checkpoint and its tensors under the spec's names; :class:`SpecError` for a tensor outside
    BERT's layout, or when ``hints`` (the model's ``config.json``) do not give ``num_attention_heads``."""
    prefix = next(n for n in tensors if n.endswith(_WORDS))[: -len(_WORDS)]
    out = {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix) and n[len(prefix) :] not in _BUFFERS}
    stray = sorted(n for n in tensors if not n.startswith(prefix))
    if stray:
        raise SpecError(f"tensor {stray[0]} is outside BERT's layout (everything else is under {prefix!r})")
    heads = config_heads(hints, "num_attention_heads", "BERT")
    act, eps = hf_activation(hints.get("hidden_act", "gelu")), config_eps(hints, "layer_norm_eps", 1e-12)
    layers = [Layer("embedding", "embeddings"), Layer("layernorm", "embeddings.LayerNorm", eps=eps)]
    stream = "embeddings.LayerNorm"  # what the next residual connection reads
    for i in sorted({int(m.group(1)) for n in out if (m := _LAYER.match(n))}):
        p = f"encoder.layer.{i}"
        names = BlockNames(f"{p}.attention.self", f"{p}.attention.output.dense", f"{p}.intermediate.dense",
                           f"{p}.output.dense", f"{p}.attention.output.LayerNorm", f"{p}.output.LayerNorm")  # fmt: skip
        block, stream = block_layers(names, stream, heads, act, eps, pre_norm=False)
        layers += block
    pooled = "pooler.dense.weight" in out
    layers += [Layer("first_step"), Layer("linear", "pooler.dense", "tanh")] if pooled else [Layer("global_avg_pool")]
    spec = ArchSpec((NOMINAL_TOKENS,), tuple(layers))
    extra = sorted(set(out) - set(spec.tensor_names()), key=len)
    if extra:
        raise SpecError(f"tensor {prefix}{extra[0]} is outside BERT's layout")
    spec.validate(out)
    return spec, {n: t.float() if t.is_floating_point() else t for n, t in out.items()}
