"""What the Hugging Face inference modules (:mod:`~raywse.graph.infer_bert`, :mod:`~raywse.graph.infer_gpt2`,
:mod:`~raywse.graph.infer_vit`) share: activation names, the ``config.json`` values they need, and a transformer
block spelled as spec layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from raywse.core.spec import RUNNABLE_ACTIVATIONS, Layer, SpecError

#: Sequence length of an inferred text transformer's input (the graph does not depend on it).
NOMINAL_TOKENS = 16
#: Hugging Face's activation names (``hidden_act``, ``activation_function``) that are not raywse's own.
_HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}


def hf_activation(name: object) -> str:
    """raywse's name for a Hugging Face activation name; ``unknown`` for one raywse cannot evaluate."""
    act = _HF_ACTIVATIONS.get(str(name), str(name))
    return act if act in RUNNABLE_ACTIVATIONS else "unknown"


def config_heads(hints: Mapping[str, object], key: str, family: str) -> int:
    """The number of attention heads ``config.json`` gives under ``key``; :class:`SpecError` without it."""
    heads = hints.get(key)
    if not isinstance(heads, int) or isinstance(heads, bool) or heads < 1:
        raise SpecError(f"a {family} checkpoint: its number of attention heads is not in its names; put the model's "
                        f"config.json ({key}) next to it, or describe it with a spec file")  # fmt: skip
    return heads


def config_eps(hints: Mapping[str, object], key: str, default: float) -> float:
    """The layer norms' epsilon ``config.json`` gives under ``key`` (``default`` without it)."""
    eps = hints.get(key, default)
    if not isinstance(eps, int | float) or isinstance(eps, bool) or not eps > 0:
        raise SpecError(f"config.json: {key} {eps!r} is not a positive number")
    return float(eps)


@dataclass(frozen=True)
class BlockNames:
    """The spec names of one transformer block's layers: self-attention, its output projection, the feed-forward
    pair, and the two layer norms (pre-norm: before attention and before the feed-forward; post-norm: after each
    residual add)."""

    attention: str
    out_proj: str
    ffn_in: str
    ffn_out: str
    norm1: str
    norm2: str


def block_layers(
    names: BlockNames, stream: str, heads: int, act: str, eps: float, pre_norm: bool, causal: bool = False
) -> tuple[list[Layer], str]:
    """One block's layers reading the residual stream ``stream`` (the last layer before it), and the layer the next
    residual connection reads."""
    attention = [Layer("attention", names.attention, heads=heads, causal=causal), Layer("linear", names.out_proj),
                 Layer("add", source=stream)]  # fmt: skip
    ffn = [Layer("linear", names.ffn_in, act), Layer("linear", names.ffn_out)]
    norm1, norm2 = (Layer("layernorm", n, eps=eps) for n in (names.norm1, names.norm2))
    if pre_norm:  # h + O(attention(LN1(h))), then h + W2 act(W1 LN2(h))
        return [norm1, *attention, norm2, *ffn, Layer("add", source=names.out_proj)], names.ffn_out
    return [*attention, norm1, *ffn, Layer("add", source=names.norm1), norm2], names.norm2  # post-norm (BERT)
