"""Spec inference for Hugging Face GPT-2 checkpoints (``wte``, ``wpe``, ``h.{i}.ln_1``, ``h.{i}.attn.c_attn``, …,
``ln_f``; a ``transformer.`` prefix is dropped, and a language-model head tied to ``wte`` with it), as
:mod:`raywse.graph.infer` hands them over.

A GPT-2 block is pre-norm and causal: ``h = h + O(causal_attention(LN1(h)))``, then ``h = h + W2 act(W1 LN2(h))``;
the last block is followed by ``ln_f``. GPT-2 stores its projections as ``Conv1D`` (``[in, out]``, ``x @ W``) and
the queries, keys and values fused in one ``c_attn``: they are transposed to ``nn.Linear``'s ``[out, in]`` and split
into the spec's ``query`` / ``key`` / ``value``. GPT-2 has no token types: its embedding gets one token-type row of
zeros (the same function; one input node whose edges all weigh 0). The output is the last hidden state averaged over
positions. The number of heads comes from the model's ``config.json`` (``n_head``, with ``layer_norm_epsilon`` and
``activation_function``). The input is :data:`NOMINAL_TOKENS` token ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.infer_hf import NOMINAL_TOKENS, BlockNames, block_layers, config_eps, config_heads, hf_activation

_LAYER = re.compile(r"^h\.(\d+)\.")
#: Buffers a GPT-2 checkpoint may carry that are not weights (older ``transformers`` saved the causal mask).
_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")
_NORM = re.compile(r"^(ln_f|h\.\d+\.ln_[12])\.(weight|bias)$")
_HEAD = "lm_head.weight"


def is_gpt2(tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether the tensors are named as Hugging Face's ``GPT2Model`` (or ``GPT2LMHeadModel``) names them."""
    return any(n.endswith("wte.weight") for n in tensors) and any(".attn.c_attn.weight" in n for n in tensors)


def gpt2_spec_and_tensors(
    tensors: Mapping[str, torch.Tensor], hints: Mapping[str, object]
) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec of a GPT-2 checkpoint and its tensors under the spec's names; :class:`SpecError` for a tensor outside
    GPT-2's layout, a language-model head not tied to the token table, or without ``n_head`` in ``hints``."""
    prefix = next(n for n in tensors if n.endswith("wte.weight"))[: -len("wte.weight")]
    src = {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}
    src = {n: t for n, t in src.items() if not _BUFFER.match(n)}
    stray = sorted(n for n in tensors if not n.startswith(prefix) and n != _HEAD)
    if stray:
        raise SpecError(f"tensor {stray[0]} is outside GPT-2's layout (everything else is under {prefix!r})")
    if _HEAD in tensors and not torch.equal(tensors[_HEAD], src["wte.weight"]):
        raise SpecError(f"{_HEAD} is not tied to {prefix}wte.weight: an untied language-model head is not supported")
    heads = config_heads(hints, "n_head", "GPT-2")
    if hints.get("scale_attn_weights", True) is not True or hints.get("scale_attn_by_inverse_layer_idx", False):
        raise SpecError("config.json: attention scores scaled other than by 1/sqrt(head width) (scale_attn_weights, "
                        "scale_attn_by_inverse_layer_idx) are not supported")  # fmt: skip
    act = hf_activation(hints.get("activation_function", "gelu_new"))
    eps = config_eps(hints, "layer_norm_epsilon", 1e-5)
    if "wpe.weight" not in src:
        raise SpecError(f"a GPT-2 checkpoint without its position table {prefix}wpe.weight")
    words, positions = src.pop("wte.weight"), src.pop("wpe.weight")
    out = {"embeddings.word_embeddings.weight": words, "embeddings.position_embeddings.weight": positions,
           "embeddings.token_type_embeddings.weight": torch.zeros(1, words.shape[-1], dtype=words.dtype)}  # fmt: skip
    layers = [Layer("embedding", "embeddings")]
    stream = "embeddings"  # what the next residual connection reads: the last layer before it
    for i in sorted({int(m.group(1)) for n in src if (m := _LAYER.match(n))}):
        p = f"h.{i}"
        _split_attention(src, out, p)
        for name in (f"{p}.attn.c_proj", f"{p}.mlp.c_fc", f"{p}.mlp.c_proj"):  # Conv1D: [in, out]
            for w in ("weight", "bias"):
                t = src.pop(f"{name}.{w}", None)
                if t is not None:
                    out[f"{name}.{w}"] = t.T if w == "weight" and t.dim() == 2 else t
        names = BlockNames(f"{p}.attn", f"{p}.attn.c_proj", f"{p}.mlp.c_fc", f"{p}.mlp.c_proj", f"{p}.ln_1",
                           f"{p}.ln_2")  # fmt: skip
        block, stream = block_layers(names, stream, heads, act, eps, pre_norm=True, causal=True)
        layers += block
    layers += [Layer("layernorm", "ln_f", eps=eps), Layer("global_avg_pool")]
    for name in [n for n in src if _NORM.match(n)]:
        out[name] = src.pop(name)
    if src:
        raise SpecError(f"tensor {prefix}{sorted(src, key=len)[0]} is outside GPT-2's layout")
    spec = ArchSpec((NOMINAL_TOKENS,), tuple(layers))
    spec.validate(out)
    return spec, {n: t.float() for n, t in out.items()}


def _split_attention(src: dict[str, torch.Tensor], out: dict[str, torch.Tensor], p: str) -> None:
    """Move ``{p}.attn.c_attn`` (``[d, 3d]`` and ``[3d]``) into ``{p}.attn.query`` / ``key`` / ``value``."""
    w, b = src.pop(f"{p}.attn.c_attn.weight", None), src.pop(f"{p}.attn.c_attn.bias", None)
    if w is None or b is None or w.dim() != 2 or w.shape[1] % 3 or b.shape != (w.shape[1],):
        shape = None if w is None else list(w.shape)
        raise SpecError(f"{p}.attn.c_attn: weight {shape} and bias are not GPT-2's fused [d, 3d] projection")
    for name, weight, bias in zip(("query", "key", "value"), w.chunk(3, dim=1), b.chunk(3), strict=True):
        out[f"{p}.attn.{name}.weight"], out[f"{p}.attn.{name}.bias"] = weight.T.contiguous(), bias
