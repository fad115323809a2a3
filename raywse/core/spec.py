"""Architecture specs: the machine-readable description of what a checkpoint computes.

An :class:`ArchSpec` is a sequential chain of :class:`Layer` s plus the input shape. Together with a checkpoint's
tensors it fully determines the network's function (:func:`raywse.core.forward.forward`). The zoo writes specs into
its manifest and into each safetensors file's metadata; graphify reads them back, takes one from the user (a spec
file), or infers one for foreign files (:mod:`raywse.graph.infer`).

Tensor naming follows ``torch.nn``: layer ``name`` owns ``{name}.weight`` / ``{name}.bias`` (and ``running_mean`` /
``running_var`` for batch norm; a ``prelu`` layer owns ``{name}.weight`` only, its slopes; an ``lstm`` or ``gru``
layer ``weight_ih`` / ``weight_hh`` / ``bias_ih`` / ``bias_hh``, as ``nn.LSTMCell`` / ``nn.GRUCell``; a layer or
group norm ``{name}.weight`` / ``{name}.bias``; the transformer layers are named as Hugging Face's BERT names them:
an ``embedding`` owns ``{name}.word_embeddings.weight`` and the position and token-type tables, an ``attention``
``{name}.query`` / ``key`` / ``value`` ``.weight`` / ``.bias``). Inputs are ``[features]``, ``[C, L]`` (sequences,
1-D convs), ``[C, H, W]`` (images) or ``[L]`` token ids (a first ``embedding`` layer); a
``linear`` layer on ``[C, L]`` acts on every position.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch

#: Layers whose outputs are neurons (graph nodes). ``magnitude`` is parameter-free: ``sqrt(a² + b²)`` of the channel
#: pairs ``(c, c + C/2)`` (an STFT's real and imaginary parts); ``lstm`` / ``gru`` run an LSTM / GRU cell over the
#: sequence;
#: ``embedding`` looks token ids up (plus their positions' and token type 0's rows); ``attention`` is multi-head
#: scaled dot-product self-attention over the positions (its output: the attended values); ``layernorm`` normalises
#: each position's features, then scales and shifts them; ``groupnorm`` normalises each of ``groups`` blocks of
#: consecutive channels over its channels and positions (``nn.GroupNorm``), then scales and shifts every channel;
#: ``patch_embedding`` is a vision transformer's first step: a conv of stride ``stride`` over the image (its
#: ``projection``), the patches read as positions (row-major), a learned class token put first, and a learned table of
#: positions added.
NODE_LAYER_KINDS = (
    "linear", "conv2d", "conv1d", "lstm", "gru", "magnitude", "embedding", "attention", "layernorm", "groupnorm",
    "patch_embedding",
)  # fmt: skip
#: Node layers that read the network's input only (the first layer): their inputs include table rows.
FIRST_ONLY_KINDS = ("embedding", "patch_embedding")
#: Node layers that normalise what they read (a neuron per input feature, scaled and shifted): tied to their input.
NORM_KINDS = ("layernorm", "groupnorm")
#: Node layers computing ``weight · x + bias``: their weights' spatial dimensions by kind.
AFFINE_KINDS = {"linear": 0, "conv1d": 1, "conv2d": 2}
#: Recurrent cells and their gates: ``nn.LSTMCell``'s rows are input, forget, cell, output; ``nn.GRUCell``'s reset,
#: update, new (candidate).
RECURRENT_GATES = {"lstm": 4, "gru": 3}
PARAMETRIC_KINDS = (
    *AFFINE_KINDS, *RECURRENT_GATES, *FIRST_ONLY_KINDS, "attention", *NORM_KINDS, "batchnorm", "prelu",
)  # fmt: skip
#: ``first_step``: position 0 of a sequence (BERT's pooler reads its [CLS] token); ``to_sequence``: a ``[C, H, W]``
#: map read as ``H·W`` positions of ``C`` features (row-major), as a vision transformer reads patches.
PARAMETER_FREE_KINDS = (
    "flatten", "global_avg_pool", "max_pool2d", "avg_pool2d", "magnitude", "first_step", "to_sequence",
)  # fmt: skip
#: ``add``: a residual connection (parameter-free, or with a projection when it has a ``name``).
LAYER_KINDS = (*PARAMETRIC_KINDS, *PARAMETER_FREE_KINDS, "add")
#: The tensors of an ``lstm`` or ``gru`` layer (``nn.LSTMCell``'s and ``nn.GRUCell``'s; gate rows in PyTorch's order).
RECURRENT_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
LSTM_GATES = RECURRENT_GATES["lstm"]
#: The suffix of a bidirectional layer's reverse-direction tensors (``nn.LSTM``'s ``weight_ih_l0_reverse``).
REVERSE = "_reverse"


def recurrent_params(layer: Layer) -> tuple[str, ...]:
    """The tensor names (after ``{layer.name}.``) of an ``lstm`` / ``gru`` layer: one cell, or two when it is
    bidirectional (the reverse direction's with :data:`REVERSE`)."""
    return (*RECURRENT_PARAMS, *(f"{p}{REVERSE}" for p in RECURRENT_PARAMS if layer.bidirectional))


#: The tables of an ``embedding`` layer (rows: tokens, positions, token types) and the projections of an attention.
EMBEDDING_TABLES = ("word_embeddings", "position_embeddings", "token_type_embeddings")
ATTENTION_PROJECTIONS = ("query", "key", "value")
#: The tensors of a ``patch_embedding`` layer: the patch conv ``[C', C, kh, kw]`` and its bias, the class token
#: ``[C']`` and the position table ``[patches + 1, C']`` (row 0: the class token's position).
PATCH_PARAMS = ("projection.weight", "projection.bias", "cls_token", "position_embeddings")

#: Activation names and their ids (ids are node features in neural graphs; keep the order stable).
#: ``prelu`` names a ``prelu`` layer (learned slopes, one per channel or one shared), not a layer's ``activation``.
#: ``gelu_tanh`` is GELU's tanh approximation (GPT-2's ``gelu_new``).
ACTIVATIONS = ("none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "unknown", "prelu", "gelu_tanh")
#: The activations a layer's ``activation`` can name and :func:`raywse.core.forward.activate` evaluates.
RUNNABLE_ACTIVATIONS = tuple(a for a in ACTIVATIONS if a not in ("unknown", "prelu"))
#: Activations f with f(s * x) = s * f(x) for s > 0: hidden neurons followed by one can be rescaled.
POSITIVELY_HOMOGENEOUS = ("relu", "leaky_relu", "none", "prelu")
#: The slope of each piecewise-linear activation below zero (PReLU's is learned: a tensor of its layer).
NEGATIVE_SLOPES = {"none": 1.0, "relu": 0.0, "leaky_relu": 0.01}
#: Odd activations, f(-x) = -f(x): hidden neurons followed by one (and no max pooling) can flip sign.
ODD = ("none", "tanh")


class SpecError(ValueError):
    """A spec is malformed or does not match the tensors it should describe."""


@dataclass(frozen=True)
class Layer:
    """One step of a sequential network; ``activation`` is applied after the layer."""

    kind: str
    name: str = ""
    activation: str = "none"
    stride: int = 1
    padding: int = 0
    kernel_size: int = 2  # pooling windows only
    eps: float = 1e-5  # batch / layer / group norm only
    heads: int = 0  # attention only
    groups: int = 0  # group norm only
    source: str = ""  # add only: the node layer whose output (after its followers) is added
    causal: bool = False  # attention only: each position attends to itself and earlier positions (GPT-2's mask)
    bidirectional: bool = False  # lstm / gru only: a second cell reads the sequence backwards (hidden states joined)

    def __post_init__(self) -> None:
        if not all(isinstance(v, str) for v in (self.kind, self.name, self.activation, self.source)):
            raise SpecError(f"layer {self.name!r}: kind, name, activation and source are strings")
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float) or not 0 <= self.eps < math.inf:
            raise SpecError(f"{self.kind} layer {self.name!r}: eps is a finite number >= 0, got {self.eps!r}")
        if self.kind not in LAYER_KINDS:
            raise SpecError(f"unsupported layer kind {self.kind!r} (supported: {', '.join(LAYER_KINDS)})")
        if self.activation not in ACTIVATIONS or self.activation == "prelu":
            named = ", ".join(a for a in ACTIVATIONS if a != "prelu")
            raise SpecError(f"unsupported activation {self.activation!r} (supported: {named}; PReLU is a layer)")
        if self.kind in PARAMETRIC_KINDS and not self.name:
            raise SpecError(f"{self.kind} layer needs a tensor name prefix")
        if (self.kind == "add") != bool(self.source):
            raise SpecError("an add layer (and only an add layer) names its source layer")
        counts = (self.stride, self.padding, self.kernel_size, self.heads, self.groups)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
            raise SpecError(
                f"{self.kind} layer {self.name!r}: stride, padding, kernel_size, heads and groups are integers"
            )
        if self.stride < 1 or self.kernel_size < 1 or self.padding < 0:
            raise SpecError(f"{self.kind} layer {self.name!r}: stride and kernel_size must be >= 1, padding >= 0")
        if (self.kind == "attention") != (self.heads > 0):
            raise SpecError(f"{self.kind} layer {self.name!r}: an attention layer (and only one) has heads >= 1")
        if self.causal is not False and (self.kind != "attention" or self.causal is not True):
            raise SpecError(f"{self.kind} layer {self.name!r}: causal is true or false, and only for an attention")
        if self.bidirectional is not False and (self.kind not in RECURRENT_GATES or self.bidirectional is not True):
            raise SpecError(f"{self.kind} layer {self.name!r}: bidirectional is true or false, and only for lstm / gru")
        if (self.kind == "groupnorm") != (self.groups > 0):
            raise SpecError(f"{self.kind} layer {self.name!r}: a groupnorm layer (and only one) has groups >= 1")
        if self.kind == "prelu" and self.activation != "none":
            raise SpecError(f"prelu layer {self.name!r} is an activation itself: it takes no activation after it")

    @property
    def parametric(self) -> bool:
        return self.kind in PARAMETRIC_KINDS


@dataclass(frozen=True)
class ArchSpec:
    """A sequential architecture: ``input_shape`` excludes the batch dimension (``[64]`` or ``[1, 8, 8]``)."""

    input_shape: tuple[int, ...]
    layers: tuple[Layer, ...] = field(default_factory=tuple)

    def to_json(self) -> str:
        return json.dumps({"input_shape": list(self.input_shape), "layers": [_layer_dict(ly) for ly in self.layers]})

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        """The spec that :meth:`to_json` wrote; :class:`SpecError` when ``text`` is not one."""
        return _spec_from_json(text)

    def tensor_names(self) -> list[str]:
        """Names of every tensor the spec expects, in layer order."""
        return list(_tensor_names(self))

    def validate(self, tensors: Mapping[str, torch.Tensor]) -> list[tuple[int, ...]]:
        """Raise :class:`SpecError` unless ``tensors`` have exactly the names, shapes and finite values the spec needs;
        returns each layer's output shape.

        Shapes are checked layer by layer (:func:`layer_shapes`), so a conv/linear mismatch is caught here with the
        layer's name rather than deep inside a matmul.
        """
        names = _tensor_names(self)
        expected = set(names)
        missing = sorted(expected - set(tensors))
        if missing:
            raise SpecError(f"missing tensors: {', '.join(missing[:5])}")
        extra = sorted(set(tensors) - expected)
        if extra:
            raise SpecError(f"tensors not described by the spec: {', '.join(extra[:5])}")
        for name in names:
            if not tensors[name].is_floating_point():
                raise SpecError(f"tensor {name} has dtype {tensors[name].dtype}, expected a floating-point dtype")
        flat = [tensors[n].detach().reshape(-1).float() for n in names]
        if flat and not bool(torch.isfinite(torch.cat(flat)).all()):  # one check of them all, then the one to blame
            for name in names:  # (a float64 value beyond float32's range fails the first check but is finite)
                if not torch.isfinite(tensors[name]).all():
                    raise SpecError(f"tensor {name} contains NaN or Inf values")
        return layer_shapes(self, {name: tuple(tensors[name].shape) for name in expected})


@functools.lru_cache(maxsize=1024)  # every checkpoint of a zoo group carries the same spec text
def _spec_from_json(text: str) -> ArchSpec:
    try:
        raw = json.loads(text)
        layers = tuple(Layer(**ly) for ly in raw["layers"])
        return ArchSpec(input_shape=tuple(int(d) for d in raw["input_shape"]), layers=layers)
    except SpecError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"malformed layer spec: {exc}") from exc


@functools.lru_cache(maxsize=1024)
def _tensor_names(spec: ArchSpec) -> tuple[str, ...]:
    names: list[str] = []
    for layer in spec.layers:
        if layer.kind in AFFINE_KINDS:
            names += [f"{layer.name}.weight", f"{layer.name}.bias"]
        elif layer.kind in RECURRENT_GATES:
            names += [f"{layer.name}.{p}" for p in recurrent_params(layer)]
        elif layer.kind == "embedding":
            names += [f"{layer.name}.{table}.weight" for table in EMBEDDING_TABLES]
        elif layer.kind == "attention":
            names += [f"{layer.name}.{p}.{w}" for p in ATTENTION_PROJECTIONS for w in ("weight", "bias")]
        elif layer.kind == "patch_embedding":
            names += [f"{layer.name}.{p}" for p in PATCH_PARAMS]
        elif layer.kind in NORM_KINDS:
            names += [f"{layer.name}.weight", f"{layer.name}.bias"]
        elif layer.kind == "batchnorm":
            names += [f"{layer.name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
        elif layer.kind == "prelu":
            names.append(f"{layer.name}.weight")
        elif layer.kind == "add" and layer.name:  # the projection of the residual connection
            names += [f"{layer.name}.weight", f"{layer.name}.bias"]
    return tuple(names)


def layer_shapes(spec: ArchSpec, shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Each layer's output shape (no batch dimension) for tensors of ``shapes``, computed from the shapes alone;
    :class:`SpecError` naming the layer where they do not chain."""
    return list(_layer_shapes(spec, tuple(sorted(shapes.items()))))


@functools.lru_cache(maxsize=256)  # a zoo holds a few hundred architectures, each checked for every checkpoint
def _layer_shapes(spec: ArchSpec, shapes: tuple[tuple[str, tuple[int, ...]], ...]) -> tuple[tuple[int, ...], ...]:
    by_name = dict(shapes)
    return tuple(through_layers(spec, tuple(spec.input_shape), lambda ly, x, done: _shape_after(ly, by_name, x, done)))


def through_layers(spec: ArchSpec, x, step) -> Iterator:
    """Yield ``x`` after each layer of ``spec``, where ``step(layer, x, finished)`` applies one layer and
    ``finished`` maps every finished linear/conv layer to what it handed on (its output after its followers: what a
    residual ``add`` reads)."""
    finished: dict = {}
    current = ""
    for layer in spec.layers:
        if layer.kind in NODE_LAYER_KINDS:
            if current:
                finished[current] = x
            current = layer.name
        x = step(layer, x, finished)
        yield x


def _shape_after(layer: Layer, shapes: Mapping[str, tuple[int, ...]], x: tuple[int, ...], finished: dict) -> tuple:
    def fail(why: str) -> SpecError:
        return SpecError(f"tensor shapes do not chain at {layer.kind} {layer.name!r}: {why}")

    def affine(name: str, x: tuple[int, ...], spatial: int, stride: int = 1, padding: int = 0) -> tuple[int, ...]:
        w = shapes[f"{name}.weight"]
        if len(w) != 2 + spatial:
            raise fail(f"a {len(w)}-D weight {list(w)} for a {layer.kind} layer on {list(x)} inputs")
        if shapes[f"{name}.bias"] != w[:1]:
            raise fail(f"bias {list(shapes[f'{name}.bias'])} for weight {list(w)}")
        if spatial == 0 and len(x) == 2 and x[0] == w[1] and layer.kind == "linear":  # on every position
            return (w[0], x[1])
        if len(x) != 1 + spatial or x[0] != w[1]:
            raise fail(f"weight {list(w)} cannot read an input of shape {list(x)}")
        out = tuple((x[i + 1] + 2 * padding - w[i + 2]) // stride + 1 for i in range(spatial))
        if min(out, default=1) < 1:
            raise fail(f"a {'x'.join(map(str, w[2:]))} kernel does not fit a {'x'.join(map(str, x[1:]))} map")
        return (w[0], *out)

    kind = layer.kind
    if kind in AFFINE_KINDS:
        return affine(layer.name, x, AFFINE_KINDS[kind], layer.stride, layer.padding)
    if kind in RECURRENT_GATES:
        w_ih, w_hh = (shapes[f"{layer.name}.{p}"] for p in RECURRENT_PARAMS[:2])
        hidden, g = (w_hh[1] if len(w_hh) == 2 else 0), RECURRENT_GATES[kind]
        gates = (g * hidden,)
        biases = tuple(shapes[f"{layer.name}.{p}"] for p in RECURRENT_PARAMS[2:])
        if len(w_ih) != 2 or w_hh != (*gates, hidden) or w_ih[0] != gates[0] or any(b != gates for b in biases):
            cell = f"{'an LSTM' if kind == 'lstm' else 'a GRU'} cell's ({g}H x in, {g}H x H)"
            raise fail(f"weight_ih {list(w_ih)} / weight_hh {list(w_hh)} are not {cell}")
        if len(x) not in (1, 2) or x[0] != w_ih[1]:
            raise fail(f"weight_ih {list(w_ih)} cannot read an input of shape {list(x)} ([features] or [C, L])")
        reverse = [(p, shapes[f"{layer.name}.{p}{REVERSE}"]) for p in RECURRENT_PARAMS if layer.bidirectional]
        if any(shape != shapes[f"{layer.name}.{p}"] for p, shape in reverse):
            raise fail("the reverse direction's tensors are not shaped as the forward direction's")
        return (hidden * (2 if layer.bidirectional else 1), *x[1:])
    if kind == "embedding":
        tables = [shapes[f"{layer.name}.{table}.weight"] for table in EMBEDDING_TABLES]
        if any(len(t) != 2 or t[1] != tables[0][1] or t[0] < 1 for t in tables):
            raise fail(f"tables {[list(t) for t in tables]} are not [rows >= 1, C] tables of one width")
        if len(x) != 1 or x[0] > tables[1][0]:
            raise fail(f"reads [L] token ids with L <= {tables[1][0]} positions, got an input of shape {list(x)}")
        return (tables[0][1], x[0])
    if kind == "attention":
        (q, qb), (k, kb), (v, vb) = ((shapes[f"{layer.name}.{p}.{w}"] for w in ("weight", "bias")) for p in
                                     ATTENTION_PROJECTIONS)  # fmt: skip
        if len(x) != 2 or any(len(w) != 2 or w[1] != x[0] for w in (q, k, v)) or q != k:
            raise fail(f"query {list(q)} / key {list(k)} / value {list(v)} cannot read [C, L] = {list(x)}")
        if any(b != w[:1] for w, b in ((q, qb), (k, kb), (v, vb))) or q[0] % layer.heads or v[0] % layer.heads:
            raise fail(f"biases or widths ({q[0]}, {v[0]}) do not split into {layer.heads} heads")
        return (v[0], x[1])
    if kind == "patch_embedding":
        if layer.padding:
            raise fail(f"padding {layer.padding}: a patch embedding's patches do not overlap the border (padding 0)")
        w, b, cls, table = (shapes[f"{layer.name}.{p}"] for p in PATCH_PARAMS)
        if len(w) != 4 or len(x) != 3 or x[0] != w[1] or b != w[:1] or cls != w[:1]:
            raise fail(f"projection {list(w)} / bias {list(b)} / class token {list(cls)} cannot read {list(x)}")
        grid = [(x[i + 1] - w[i + 2]) // layer.stride + 1 for i in range(2)]
        if min(grid) < 1 or table != (grid[0] * grid[1] + 1, w[0]):
            raise fail(f"position table {list(table)} is not [patches + 1, {w[0]}] for a {x[1]}x{x[2]} image")
        return (w[0], grid[0] * grid[1] + 1)
    if kind in NORM_KINDS:
        if any(shapes[f"{layer.name}.{p}"] != x[:1] for p in ("weight", "bias")):
            raise fail(f"parameters of shape {list(shapes[f'{layer.name}.weight'])} for {x[0]} features")
        if kind == "groupnorm" and x[0] % layer.groups:
            raise fail(f"{x[0]} channels do not split into {layer.groups} groups")
        return x
    if kind == "first_step":
        if len(x) != 2:
            raise fail(f"needs a [C, L] input, got {list(x)}")
        return x[:1]
    if kind == "to_sequence":
        if len(x) != 3:
            raise fail(f"needs a [C, H, W] input, got {list(x)}")
        return (x[0], x[1] * x[2])
    if kind in ("batchnorm", "prelu"):
        params = ("weight", "bias", "running_mean", "running_var") if kind == "batchnorm" else ("weight",)
        allowed = {(x[0],)} | ({(1,)} if kind == "prelu" else set())
        if any(shapes[f"{layer.name}.{p}"] not in allowed for p in params):
            raise fail(f"parameters of shape {list(shapes[f'{layer.name}.weight'])} for {x[0]} features")
        return x
    if kind == "flatten":
        return (math.prod(x),)
    if kind == "magnitude":
        if x[0] % 2:
            raise fail(f"pairs channels (c, c + C/2), but C = {x[0]} is odd")
        return (x[0] // 2, *x[1:])
    if kind == "global_avg_pool":
        if len(x) == 1:
            raise fail(f"needs a [C, L] or [C, H, W] input, got {list(x)}")
        return x[:1]
    if kind in ("max_pool2d", "avg_pool2d"):
        if len(x) != 3:
            raise fail(f"needs a [C, H, W] input, got {list(x)}")
        if min(x[1:]) < layer.kernel_size:
            raise fail(f"a {layer.kernel_size}x{layer.kernel_size} window does not fit a {x[1]}x{x[2]} map")
        return (x[0], x[1] // layer.kernel_size, x[2] // layer.kernel_size)
    if layer.source not in finished:
        raise SpecError(f"add reads {layer.source!r}, which is not an earlier node layer")
    source = finished[layer.source]
    skip = affine(layer.name, source, len(source) - 1, layer.stride) if layer.name else source
    if skip != x:
        raise fail(f"adds {list(skip)} from {layer.source} to {list(x)}")
    return x


def with_zero_biases(spec: ArchSpec, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` plus a zero bias for every linear/conv layer of ``spec`` that has a weight but no bias (a layer
    built with ``bias=False``): a spec file need not say which layers have one."""
    out = dict(tensors)
    for layer in spec.layers:
        weight = out.get(f"{layer.name}.weight")
        if layer.kind in AFFINE_KINDS and weight is not None and f"{layer.name}.bias" not in out:
            out[f"{layer.name}.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
    return out


def _layer_dict(layer: Layer) -> dict:
    """Serialise a layer, leaving out fields at their defaults to keep manifests readable."""
    defaults = Layer(kind="flatten")
    out = {"kind": layer.kind}
    for key, value in asdict(layer).items():
        if key != "kind" and value != getattr(defaults, key):
            out[key] = value
    return out
