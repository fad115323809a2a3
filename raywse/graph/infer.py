"""Infer a sequential :class:`~raywse.core.spec.ArchSpec` for a foreign checkpoint that carries none, or refuse.

Checkpoints named like torchvision's ResNet go to :mod:`raywse.graph.infer_resnet` (residual blocks), those named like
Hugging Face's BERT, GPT-2 or ViT to :mod:`raywse.graph.infer_bert`, :mod:`~raywse.graph.infer_gpt2` or
:mod:`~raywse.graph.infer_vit`; every other one is read as a chain:

Tensors are grouped by module prefix (``layers.3.weight`` → module ``layers.3``) and modules are ordered by natural
sort of their names (``layers.10`` after ``layers.2``). 2-D weights are linear layers, 3-D weights 1-D convs, 4-D
weights square-kernel convs, ``weight_ih`` / ``weight_hh`` (/ ``bias_ih`` / ``bias_hh``) an LSTM cell, or a GRU cell
when ``weight_hh`` has 3H rows (``nn.LSTM``'s and ``nn.GRU``'s ``weight_ih_l1`` is read as module ``{name}.l1``,
and ``weight_ih_l1_reverse`` as its reverse direction: a bidirectional layer), 1-D weights with running statistics batch
norms, and a lone 1-D weight (no bias) a
PReLU: it follows the
layer of its own number in the same parent (``prelu3`` after ``conv3``, as in MTCNN), else the layer before it in
name order. Output heads — the last layers, siblings named alike up to a final number (``conv4_1``, ``conv4_2``) that
read the same features and do not chain — are one output layer, their outputs concatenated in name order.
Parameter-free layers (activations, pooling) leave no tensors, so they are guessed: hidden activations are
``"unknown"`` (the last layer's is ``"none"``), a linear layer whose ``in_features`` equals the previous conv's
channels reads a ``global_avg_pool``, and one reading ``C·s²`` reads a ``flatten`` of an ``s×s`` map (``C·L`` of an
``L``-long one after 1-D convs; flattened
channel-major, as ``torch.flatten`` does; a network that flattens channel-last, such as MTCNN's R-/O-Net, gets edges
that group its dense layer's weights by the wrong channel). Convs are assumed to have stride 1 and padding
``k // 2`` and no pooling happens between them, so the inferred input size (``s`` minus one per even-sized kernel, or
:data:`NOMINAL_SPATIAL` when no flatten fixes it) may differ from the network's real one: this changes the spec's
function, never its neural graph.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping

import torch

from raywse.core.spec import (
    NODE_LAYER_KINDS,
    RECURRENT_GATES,
    RECURRENT_PARAMS,
    REVERSE,
    RUNNABLE_ACTIVATIONS,
    ArchSpec,
    Layer,
    SpecError,
)
from raywse.graph.infer_bert import bert_spec_and_tensors, is_bert
from raywse.graph.infer_gpt2 import gpt2_spec_and_tensors, is_gpt2
from raywse.graph.infer_resnet import is_torchvision_resnet, resnet_spec_and_tensors
from raywse.graph.infer_vit import is_vit, vit_spec_and_tensors
from raywse.graph.names import NOMINAL_SPATIAL, natural_key

_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked", *RECURRENT_PARAMS,
           *(f"{p}{REVERSE}" for p in RECURRENT_PARAMS))  # fmt: skip
_TORCH_LSTM = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")  # nn.LSTM's names
_ATTENTION = re.compile(r"attn|attention|in_proj", re.IGNORECASE)
_NORM = re.compile(r"norm|^ln|rms", re.IGNORECASE)  # names of normalisation layers, never PReLUs


def infer_spec(tensors: Mapping[str, torch.Tensor], hints: Mapping[str, object] | None = None) -> ArchSpec:
    """The inferred spec of a checkpoint without one; :class:`SpecError` with a one-line reason if it is not a chain."""
    return infer_spec_and_tensors(tensors, hints)[0]


def infer_spec_and_tensors(
    tensors: Mapping[str, torch.Tensor], hints: Mapping[str, object] | None = None
) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """Infer the spec and return tensors matching it exactly; ``hints`` are what the model's ``config.json`` says
    (a BERT's number of attention heads: :mod:`raywse.graph.infer_bert`) and what the user told
    (``activation``: the hidden activation of a chain, which its tensors cannot show; see :data:`ACTIVATION_HINT`).

    Missing linear/conv biases become zeros, a batch norm without affine parameters gets weight 1 and bias 0, and
    ``num_batches_tracked`` counters (bookkeeping, not weights) are dropped; every other tensor must be explained.
    """
    if not tensors:
        raise SpecError("empty checkpoint: no tensors")
    if is_torchvision_resnet(tensors):
        return resnet_spec_and_tensors(tensors)
    if is_bert(tensors):
        return bert_spec_and_tensors(tensors, hints or {})
    if is_gpt2(tensors):
        return gpt2_spec_and_tensors(tensors, hints or {})
    if is_vit(tensors):
        return vit_spec_and_tensors(tensors, hints or {})
    attention = sorted(n for n in tensors if _ATTENTION.search(n))
    if attention:
        raise SpecError(f"not a sequential chain: attention tensors ({attention[0]}, ...)")
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in sorted(tensors.items(), key=lambda item: natural_key(item[0])):  # first error: stable
        prefix, _, param = name.rpartition(".")
        torch_lstm = _TORCH_LSTM.match(param)
        if torch_lstm:  # layer k of an nn.LSTM / nn.GRU: module l{k}, its reverse direction's tensors suffixed
            layer = f"l{torch_lstm.group(2)}"
            prefix, param = f"{prefix}.{layer}" if prefix else layer, torch_lstm.group(1) + (torch_lstm.group(3) or "")
        if not prefix:
            raise SpecError(f"tensor {name!r} has no module prefix (expected names like layers.0.weight)")
        if param not in _PARAMS:
            raise SpecError(f"unsupported tensor {name}: {param!r} is not a weight, bias or batch-norm statistic")
        if tensor.dim() not in (1, 2, 3, 4) and param != "num_batches_tracked":
            raise SpecError(f"unsupported {tensor.dim()}-D tensor {name} {list(tensor.shape)}")
        modules.setdefault(prefix, {})[param] = tensor
    out: dict[str, torch.Tensor] = {}
    names = sorted(modules, key=natural_key)
    kinds = {m: _classify(m, modules[m], out) for m in names}
    order = _place_prelus(names, kinds)
    _refuse_parallel(order, kinds, out)
    order = _merge_output_heads(order, kinds, out)
    return with_hidden_activation(_build_chain(order, kinds, out), str((hints or {}).get(ACTIVATION_HINT, ""))), out


#: The hint naming a chain's hidden activation (``raywse search --activation``): with it the network can be run on
#: probes; without it its activations are ``"unknown"`` and it is graphified without probe features.
ACTIVATION_HINT = "activation"


def check_activation_hint(activation: str) -> None:
    """:class:`SpecError` unless ``activation`` is one raywse can evaluate (a hint must make the network runnable)."""
    if activation not in RUNNABLE_ACTIVATIONS:
        raise SpecError(f"unsupported activation hint {activation!r} (supported: {', '.join(RUNNABLE_ACTIVATIONS)})")


def with_hidden_activation(spec: ArchSpec, activation: str) -> ArchSpec:
    """``spec`` with every ``"unknown"`` activation replaced by ``activation`` (unchanged when it is empty);
    :class:`SpecError` for an activation raywse cannot evaluate."""
    if not activation:
        return spec
    check_activation_hint(activation)
    layers = [
        dataclasses.replace(ly, activation=activation) if ly.activation == "unknown" else ly for ly in spec.layers
    ]
    return dataclasses.replace(spec, layers=tuple(layers))


def _number(module: str) -> tuple[str, str]:
    """``(parent, trailing number of the leaf name)``: ``("", "3")`` for ``prelu3``, ``("a", "")`` for ``a.act``."""
    parent, _, leaf = module.rpartition(".")
    match = re.search(r"(\d+(?:_\d+)*)$", leaf)
    return parent, match.group(1) if match and not leaf.isdigit() else ""


def _place_prelus(order: list[str], kinds: dict[str, str]) -> list[str]:
    """Move each PReLU right after its layer (the linear/conv of its own number in its parent, else the layer before
    it in name order) and that layer's batch norms."""
    prelus = [m for m in order if kinds[m] == "prelu"]
    placed = [m for m in order if kinds[m] != "prelu"]
    for prelu in prelus:
        parent, number = _number(prelu)
        hosts = [m for m in placed if kinds[m] in NODE_LAYER_KINDS and number and _number(m) == (parent, number)]
        if len(hosts) == 1:
            at = placed.index(hosts[0])
        else:
            before = [m for m in placed if natural_key(m) < natural_key(prelu)]
            if not before:
                raise SpecError(f"PReLU {prelu} comes before any linear/conv layer")
            at = placed.index(before[-1])
        while (  # past the host's own batch norms: those named before the PReLU (conv1, bn1, prelu1 / 0, 1, 2)
            at + 1 < len(placed)
            and kinds[placed[at + 1]] == "batchnorm"
            and natural_key(placed[at + 1]) < natural_key(prelu)
        ):
            at += 1
        placed.insert(at + 1, prelu)
    return placed


def _merge_output_heads(order: list[str], kinds: dict[str, str], out: dict[str, torch.Tensor]) -> list[str]:
    """Merge trailing sibling layers named alike up to a final number that read the same features (output heads such
    as MTCNN's ``conv4_1`` / ``conv4_2``) into one layer ``a+b``, rows concatenated in name order."""
    heads: list[str] = []
    stem = lambda m: re.sub(r"\d+$", "", m)  # noqa: E731
    for m in reversed(order):
        if kinds[m] not in ("linear", "conv1d", "conv2d") or not _number(m)[1]:
            break
        w = out[f"{m}.weight"]
        if heads:
            after = out[f"{heads[0]}.weight"]
            same_input = kinds[m] == kinds[heads[0]] and w.shape[1:] == after.shape[1:]
            if stem(m) != stem(heads[0]) or not same_input or after.shape[1] == w.shape[0]:  # alike, not a chain
                break
        heads.insert(0, m)
    if len(heads) < 2:
        return order
    merged = "+".join(heads)
    for param in ("weight", "bias"):
        out[f"{merged}.{param}"] = torch.cat([out.pop(f"{m}.{param}") for m in heads])
    kinds[merged] = kinds[heads[0]]
    return [m for m in order if m not in heads] + [merged]


def _classify(module: str, params: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> str:
    """Kind of one module; writes its (completed) tensors into ``out``."""
    params = {k: v for k, v in params.items() if k != "num_batches_tracked"}
    for key, tensor in params.items():
        if not tensor.is_floating_point():
            raise SpecError(f"tensor {module}.{key} has dtype {tensor.dtype}, expected floating point")
    w = params.get("weight")
    stats = "running_mean" in params and "running_var" in params
    if any(k.startswith(("weight_ih", "weight_hh")) for k in params):
        return _classify_recurrent(module, params, out)
    if stats:
        kind, n = "batchnorm", len(params["running_mean"])
        like = params["running_mean"]
        full = {"weight": torch.ones_like(like), "bias": torch.zeros_like(like), **params}
    elif w is None:
        raise SpecError(f"module {module} has no weight ({', '.join(sorted(params))})")
    elif w.dim() == 1 and set(params) == {"weight"}:
        if _NORM.search(module.rpartition(".")[2]):
            raise SpecError(f"unsupported layer {module}: a 1-D scale without bias or statistics (an RMSNorm?)")
        out[f"{module}.weight"] = w
        return "prelu"
    elif w.dim() == 1:
        raise SpecError(
            f"unsupported layer {module}: 1-D weight and bias without running statistics (a LayerNorm or GroupNorm? "
            "names cannot tell which, or a GroupNorm's groups: describe the network with --spec)"
        )
    elif w.dim() in (2, 3, 4):
        kind, n = {2: "linear", 3: "conv1d", 4: "conv2d"}[w.dim()], int(w.shape[0])
        if kind == "conv2d" and w.shape[2] != w.shape[3]:
            raise SpecError(f"unsupported layer {module}: non-square {w.shape[2]}x{w.shape[3]} conv kernel")
        full = {"bias": torch.zeros(n, dtype=w.dtype), **params}
    else:
        raise SpecError(f"unsupported {w.dim()}-D weight {module}.weight")
    expected = {"weight", "bias"} | ({"running_mean", "running_var"} if kind == "batchnorm" else set())
    if set(full) != expected:
        raise SpecError(f"module {module} has unexpected tensors for a {kind} layer: {', '.join(sorted(full))}")
    for key, tensor in full.items():
        if (key != "weight" or kind == "batchnorm") and tuple(tensor.shape) != (n,):
            raise SpecError(f"tensor {module}.{key} has shape {list(tensor.shape)}, expected [{n}]")
        out[f"{module}.{key}"] = tensor
    return kind


def _classify_recurrent(module: str, params: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> str:
    """An LSTM or GRU cell's tensors (missing biases become zeros) into ``out``: ``weight_hh`` with 4H rows is an
    LSTM's, with 3H a GRU's; odd shapes are refused. A bidirectional layer's reverse cell must match its forward
    cell."""
    reverse = {k[: -len(REVERSE)]: v for k, v in params.items() if k.endswith(REVERSE)}
    params = {k: v for k, v in params.items() if not k.endswith(REVERSE)}
    if set(params) - set(RECURRENT_PARAMS) or not {"weight_ih", "weight_hh"} <= set(params):
        raise SpecError(f"module {module} mixes recurrent and other tensors: {', '.join(sorted(params))}")
    if reverse and (set(reverse) != set(params) or any(reverse[k].shape != params[k].shape for k in params)):
        raise SpecError(f"module {module}: its reverse direction's tensors do not match its forward direction's")
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    rows = int(w_hh.shape[0]) if w_hh.dim() == 2 else 0
    kind = next((k for k, g in RECURRENT_GATES.items() if w_hh.dim() == 2 and rows == g * w_hh.shape[1]), None)
    if kind is None or w_ih.dim() != 2 or w_ih.shape[0] != rows:
        raise SpecError(f"unsupported layer {module}: weight_ih {list(w_ih.shape)} / weight_hh {list(w_hh.shape)} "
                        "are not an LSTM's (4H x in, 4H x H) or a GRU's (3H x in, 3H x H)")  # fmt: skip
    for suffix, cell in (("", params), (REVERSE, reverse)) if reverse else (("", params),):
        for param in RECURRENT_PARAMS:
            out[f"{module}.{param}{suffix}"] = cell.get(param, torch.zeros(rows, dtype=w_ih.dtype))
    return kind


def _input_weight(m: str, kinds: dict[str, str], out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The tensor of module ``m`` whose rows are its outputs and columns its inputs (an LSTM's: ``weight_ih``)."""
    return out[f"{m}.weight_ih" if kinds[m] in RECURRENT_GATES else f"{m}.weight"]


def _refuse_parallel(order: list[str], kinds: dict[str, str], out: dict[str, torch.Tensor]) -> None:
    """Refuse sibling layers of one kind and weight shape whose names do not order them (e.g. q/k/v projections)."""
    seen: dict[tuple, str] = {}
    for m in order:
        if kinds[m] in ("batchnorm", "prelu"):
            continue
        parent, _, leaf = m.rpartition(".")
        shape = list(_input_weight(m, kinds, out).shape)
        other = seen.setdefault((parent, kinds[m], tuple(shape)), m)
        if other != m and re.sub(r"\d+", "#", other.rpartition(".")[2]) != re.sub(r"\d+", "#", leaf):
            raise SpecError(
                f"not a sequential chain: {other} and {m} are parallel {kinds[m]} layers of shape {shape} "
                "that their names do not order (branches such as attention q/k/v projections?)"
            )


def _flattened_side(fan_in: int, width: int, dims: int) -> int:
    """The side ``s`` of the ``s``-long (``dims`` 1) or ``s×s`` (``dims`` 2) map of ``width`` channels whose flatten
    has ``fan_in`` entries; 0 when there is none (or no map: ``dims`` 0)."""
    cells, rest = divmod(fan_in, width)
    if rest or not dims:
        return 0
    side = math.isqrt(cells) if dims == 2 else cells
    return side if side**dims == cells else 0


def _build_chain(order: list[str], kinds: dict[str, str], out: dict[str, torch.Tensor]) -> ArchSpec:
    """Check the shape chain module by module and insert the pooling/flatten a conv → linear step needs."""
    layers: list[Layer] = []
    carriers: list[int] = []  # index of the layer whose activation follows each node layer (itself or its BN)
    activated: set[int] = set()  # carriers followed by a PReLU: their activation is known
    width, dims, growth = None, 0, 0  # current feature count, its map's dimensions (0: a vector), even-kernel growth
    input_shape: tuple[int, ...] | None = None
    spatial = None
    for m in order:
        kind, w = kinds[m], _input_weight(m, kinds, out)
        if kind == "prelu":
            if width is None or len(w) not in (1, width):
                raise SpecError(f"chain breaks at {m}: a PReLU of {len(w)} slopes after {width} features")
            layers.append(Layer("prelu", m))
            activated.add(carriers[-1])
            continue
        if kind == "batchnorm":
            if width is None:
                raise SpecError(f"batchnorm {m} comes before any linear/conv layer")
            if len(w) != width:
                raise SpecError(f"chain breaks at {m}: batch norm over {len(w)} features, previous layer has {width}")
            layers.append(Layer("batchnorm", m))
            carriers[-1] = len(layers) - 1
            continue
        fan_in = int(w.shape[1])
        if width is None:
            input_shape = (fan_in,)
        if kind in ("conv1d", "conv2d", *RECURRENT_GATES):
            wanted = {"conv1d": (1,), "conv2d": (2,)}.get(kind, (0, 1))
            if width is not None and dims not in wanted:
                raise SpecError(f"chain breaks at {m}: {kind} after a {('linear layer', '1-D conv', '2-D conv')[dims]}")
            if width is not None and fan_in != width:
                raise SpecError(f"chain breaks at {m}: {fan_in} input channels, previous layer has {width}")
            if kind in RECURRENT_GATES:
                layers.append(Layer(kind, m, bidirectional=f"{m}.weight_ih{REVERSE}" in out))
                dims = dims if width is not None else 1  # a first recurrent layer reads a sequence
            else:
                k = int(w.shape[2])
                growth += 1 - k % 2
                layers.append(Layer(kind, m, padding=k // 2))
                dims = wanted[0]
        else:
            if width is not None and fan_in != width:  # a map read whole: a flatten of an s-long or s×s map
                side = _flattened_side(fan_in, width, dims)
                if not side:
                    what = f"{width} channels (nor C·s² for a flatten)" if dims else f"{width} outputs"
                    raise SpecError(f"chain breaks at {m}: {fan_in} inputs, previous layer has {what}")
                if side - growth < 1:
                    raise SpecError(f"chain breaks at {m}: a {side}-wide map cannot follow its convs")
                spatial = side - growth
                layers.append(Layer("flatten"))
            elif width is not None and dims:  # as many inputs as channels: pooled over the map
                layers.append(Layer("global_avg_pool"))
            layers.append(Layer("linear", m))
            dims = 0
        width = int(w.shape[0])
        if kind in RECURRENT_GATES:  # its hidden states: one per unit and direction
            width = int(out[f"{m}.weight_hh"].shape[1]) * (2 if layers[-1].bidirectional else 1)
        carriers.append(len(layers) - 1)
    if input_shape is None:
        raise SpecError("no linear, conv or LSTM layer found")
    first = layers[0].kind
    if first in ("conv1d", "conv2d", *RECURRENT_GATES):
        input_shape = (input_shape[0], *[spatial or NOMINAL_SPATIAL] * (2 if first == "conv2d" else 1))
    for i in carriers[:-1]:
        if i not in activated:
            layers[i] = dataclasses.replace(layers[i], activation="unknown")
    spec = ArchSpec(input_shape, tuple(layers))
    spec.validate(out)
    return spec
