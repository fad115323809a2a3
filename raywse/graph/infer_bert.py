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

from raywse.core.spec import ACTIVATIONS, ArchSpec, Layer, SpecError

#: Sequence length of an inferred BERT spec's input (the graph does not depend on it).
NOMINAL_TOKENS = 16
_WORDS = "embeddings.word_embeddings.weight"
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")
#: Buffers a BERT checkpoint may carry that are not weights.
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")


#: Hugging Face's activation names (``hidden_act``, ``activation_function``) that are not raywse's own.
_HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}


def hf_activation(name: object) -> str:
    """raywse's name for a Hugging Face activation name; ``unknown`` for one raywse cannot evaluate."""
    act = _HF_ACTIVATIONS.get(str(name), str(name))
    return act if act in ACTIVATIONS and act not in ("prelu", "unknown") else "unknown"


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
    heads = hints.get("num_attention_heads")
    if not isinstance(heads, int) or heads < 1:
        raise SpecError("a BERT checkpoint: its number of attention heads is not in its names; put the model's "
                        "config.json (num_attention_heads) next to it, or describe it with a spec file")  # fmt: skip
    act = hf_activation(hints.get("hidden_act", "gelu"))
    eps = hints.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not eps > 0:
        raise SpecError(f"config.json: layer_norm_eps {eps!r} is not a positive number")
    layers = [Layer("embedding", "embeddings"), Layer("layernorm", "embeddings.LayerNorm", eps=float(eps))]
    stream = "embeddings.LayerNorm"  # what the next residual connection reads
    for i in sorted({int(m.group(1)) for n in out if (m := _LAYER.match(n))}):
        p = f"encoder.layer.{i}"
        layers += [
            Layer("attention", f"{p}.attention.self", heads=heads),
            Layer("linear", f"{p}.attention.output.dense"),
            Layer("add", source=stream),
            Layer("layernorm", f"{p}.attention.output.LayerNorm", eps=float(eps)),
            Layer("linear", f"{p}.intermediate.dense", act),
            Layer("linear", f"{p}.output.dense"),
            Layer("add", source=f"{p}.attention.output.LayerNorm"),
            Layer("layernorm", f"{p}.output.LayerNorm", eps=float(eps)),
        ]
        stream = f"{p}.output.LayerNorm"
    pooled = "pooler.dense.weight" in out
    layers += [Layer("first_step"), Layer("linear", "pooler.dense", "tanh")] if pooled else [Layer("global_avg_pool")]
    spec = ArchSpec((NOMINAL_TOKENS,), tuple(layers))
    extra = sorted(set(out) - set(spec.tensor_names()), key=len)
    if extra:
        raise SpecError(f"tensor {prefix}{extra[0]} is outside BERT's layout")
    spec.validate(out)
    return spec, {n: t.float() if t.is_floating_point() else t for n, t in out.items()}
