"""Architecture specs: the machine-readable description of what a checkpoint computes.

An :class:`ArchSpec` is a sequential chain of :class:`Layer` s plus the input shape. Together with a checkpoint's
tensors it fully determines the network's function (:func:`forward`). The zoo writes specs into its manifest and into
each safetensors file's metadata; graphify reads them back, or infers one for foreign files
(:mod:`raywse.graph.infer`).

Tensor naming follows ``torch.nn.Sequential``: layer ``name`` owns ``{name}.weight`` / ``{name}.bias`` (and
``running_mean`` / ``running_var`` for batch norm; a ``prelu`` layer owns ``{name}.weight`` only, its slopes).
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

PARAMETRIC_KINDS = ("linear", "conv2d", "batchnorm", "prelu")
PARAMETER_FREE_KINDS = ("flatten", "global_avg_pool", "max_pool2d", "avg_pool2d")
#: ``add``: a residual connection (parameter-free, or with a projection when it has a ``name``).
LAYER_KINDS = (*PARAMETRIC_KINDS, *PARAMETER_FREE_KINDS, "add")
#: Layer kinds whose outputs are neurons (graph nodes).
NODE_LAYER_KINDS = ("linear", "conv2d")

#: Activation names and their ids (ids are node features in neural graphs; keep the order stable).
#: ``prelu`` names a ``prelu`` layer (learned slopes, one per channel or one shared), not a layer's ``activation``.
ACTIVATIONS = ("none", "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "unknown", "prelu")
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
    eps: float = 1e-5  # batch norm only
    source: str = ""  # add only: the linear/conv layer whose output (after its followers) is added

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise SpecError(f"unsupported layer kind {self.kind!r} (supported: {', '.join(LAYER_KINDS)})")
        if self.activation not in ACTIVATIONS or self.activation == "prelu":
            named = ", ".join(a for a in ACTIVATIONS if a != "prelu")
            raise SpecError(f"unsupported activation {self.activation!r} (supported: {named}; PReLU is a layer)")
        if self.kind in PARAMETRIC_KINDS and not self.name:
            raise SpecError(f"{self.kind} layer needs a tensor name prefix")
        if (self.kind == "add") != bool(self.source):
            raise SpecError("an add layer (and only an add layer) names its source layer")
        if self.stride < 1 or self.kernel_size < 1 or self.padding < 0:
            raise SpecError(f"{self.kind} layer {self.name!r}: stride and kernel_size must be >= 1, padding >= 0")
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
        try:
            raw = json.loads(text)
            layers = tuple(Layer(**ly) for ly in raw["layers"])
            return cls(input_shape=tuple(int(d) for d in raw["input_shape"]), layers=layers)
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise SpecError(f"malformed layer spec: {exc}") from exc

    def tensor_names(self) -> list[str]:
        """Names of every tensor the spec expects, in layer order."""
        names: list[str] = []
        for layer in self.layers:
            if layer.kind in ("linear", "conv2d"):
                names += [f"{layer.name}.weight", f"{layer.name}.bias"]
            elif layer.kind == "batchnorm":
                names += [f"{layer.name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")]
            elif layer.kind == "prelu":
                names.append(f"{layer.name}.weight")
            elif layer.kind == "add" and layer.name:  # the projection of the residual connection
                names += [f"{layer.name}.weight", f"{layer.name}.bias"]
        return names

    def validate(self, tensors: Mapping[str, torch.Tensor]) -> list[tuple[int, ...]]:
        """Raise :class:`SpecError` unless ``tensors`` have exactly the names, shapes and finite values the spec needs;
        returns each layer's output shape.

        Shapes are checked layer by layer (:func:`layer_shapes`), so a conv/linear mismatch is caught here with the
        layer's name rather than deep inside a matmul.
        """
        expected = set(self.tensor_names())
        missing = sorted(expected - set(tensors))
        if missing:
            raise SpecError(f"missing tensors: {', '.join(missing[:5])}")
        extra = sorted(set(tensors) - expected)
        if extra:
            raise SpecError(f"tensors not described by the spec: {', '.join(extra[:5])}")
        for name in self.tensor_names():
            t = tensors[name]
            if not t.is_floating_point():
                raise SpecError(f"tensor {name} has dtype {t.dtype}, expected a floating-point dtype")
            if not torch.isfinite(t).all():
                raise SpecError(f"tensor {name} contains NaN or Inf values")
        return layer_shapes(self, {name: tuple(tensors[name].shape) for name in expected})

    def output_size(self, tensors: Mapping[str, torch.Tensor]) -> int:
        """Number of output neurons (rows of the last linear layer)."""
        last = [ly for ly in self.layers if ly.kind in ("linear", "conv2d")][-1]
        return int(tensors[f"{last.name}.weight"].shape[0])


def layer_shapes(spec: ArchSpec, shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Each layer's output shape (no batch dimension) for tensors of ``shapes``, computed from the shapes alone;
    :class:`SpecError` naming the layer where they do not chain."""
    return list(through_layers(spec, tuple(spec.input_shape), lambda ly, x, done: _shape_after(ly, shapes, x, done)))


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

    def affine(name: str, x: tuple[int, ...], stride: int = 1, padding: int = 0) -> tuple[int, ...]:
        w = shapes[f"{name}.weight"]
        if len(w) != (4 if layer.kind == "conv2d" or (layer.kind == "add" and len(x) == 3) else 2):
            raise fail(f"a {len(w)}-D weight {list(w)} for a {layer.kind} layer on {list(x)} inputs")
        if shapes[f"{name}.bias"] != w[:1]:
            raise fail(f"bias {list(shapes[f'{name}.bias'])} for weight {list(w)}")
        if len(w) == 2:
            if len(x) != 1 or x[0] != w[1]:
                raise fail(f"weight {list(w)} cannot read an input of shape {list(x)}")
            return (w[0],)
        if len(x) != 3 or x[0] != w[1]:
            raise fail(f"weight {list(w)} cannot read an input of shape {list(x)}")
        h, v = ((x[i + 1] + 2 * padding - w[i + 2]) // stride + 1 for i in (0, 1))
        if h < 1 or v < 1:
            raise fail(f"a {w[2]}x{w[3]} kernel does not fit a {x[1]}x{x[2]} map")
        return (w[0], h, v)

    kind = layer.kind
    if kind in NODE_LAYER_KINDS:
        return affine(layer.name, x, layer.stride, layer.padding)
    if kind in ("batchnorm", "prelu"):
        params = ("weight", "bias", "running_mean", "running_var") if kind == "batchnorm" else ("weight",)
        allowed = {(x[0],)} | ({(1,)} if kind == "prelu" else set())
        if any(shapes[f"{layer.name}.{p}"] not in allowed for p in params):
            raise fail(f"parameters of shape {list(shapes[f'{layer.name}.weight'])} for {x[0]} features")
        return x
    if kind == "flatten":
        return (math.prod(x),)
    if len(x) != 3 and kind in ("global_avg_pool", "max_pool2d", "avg_pool2d"):
        raise fail(f"needs a [C, H, W] input, got {list(x)}")
    if kind == "global_avg_pool":
        return x[:1]
    if kind in ("max_pool2d", "avg_pool2d"):
        if min(x[1:]) < layer.kernel_size:
            raise fail(f"a {layer.kernel_size}x{layer.kernel_size} window does not fit a {x[1]}x{x[2]} map")
        return (x[0], x[1] // layer.kernel_size, x[2] // layer.kernel_size)
    if layer.source not in finished:
        raise SpecError(f"add reads {layer.source!r}, which is not an earlier linear/conv layer")
    skip = affine(layer.name, finished[layer.source], layer.stride) if layer.name else finished[layer.source]
    if skip != x:
        raise fail(f"adds {list(skip)} from {layer.source} to {list(x)}")
    return x


def _layer_dict(layer: Layer) -> dict:
    """Serialise a layer, leaving out fields at their defaults to keep manifests readable."""
    defaults = Layer(kind="flatten")
    out = {"kind": layer.kind}
    for key, value in asdict(layer).items():
        if key != "kind" and value != getattr(defaults, key):
            out[key] = value
    return out


def activate(x: torch.Tensor, name: str) -> torch.Tensor:
    """Apply a named activation."""
    if name == "none":
        return x
    if name == "relu":
        return F.relu(x)
    if name == "leaky_relu":
        return F.leaky_relu(x, 0.01)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "gelu":
        return F.gelu(x)
    raise SpecError(f"cannot evaluate activation {name!r}")


def apply_layer(
    layer: Layer, tensors: Mapping[str, torch.Tensor], x: torch.Tensor, finished: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Apply one layer (and its activation) to ``x``; an ``add`` reads ``finished[layer.source]``, the output of an
    earlier linear/conv layer after its followers (projected when the add has a ``name``)."""
    if layer.kind == "linear":
        x = F.linear(x, tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"])
    elif layer.kind == "conv2d":
        w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
        x = F.conv2d(x, w, b, stride=layer.stride, padding=layer.padding)
    elif layer.kind == "batchnorm":
        p = {k: tensors[f"{layer.name}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")}
        x = F.batch_norm(x, p["running_mean"], p["running_var"], p["weight"], p["bias"], False, 0.0, layer.eps)
    elif layer.kind == "prelu":
        x = F.prelu(x, tensors[f"{layer.name}.weight"])
    elif layer.kind == "add":
        if layer.source not in finished:
            raise SpecError(f"add reads {layer.source!r}, which is not an earlier linear/conv layer")
        skip = finished[layer.source]
        if layer.name:
            w, b = tensors[f"{layer.name}.weight"], tensors[f"{layer.name}.bias"]
            skip = F.conv2d(skip, w, b, stride=layer.stride) if w.dim() == 4 else F.linear(skip, w, b)
        x = x + skip
    elif layer.kind == "flatten":
        x = x.flatten(1)
    elif layer.kind == "global_avg_pool":
        x = x.mean(dim=(2, 3))
    elif layer.kind == "max_pool2d":
        x = F.max_pool2d(x, layer.kernel_size)
    elif layer.kind == "avg_pool2d":
        x = F.avg_pool2d(x, layer.kernel_size)
    return activate(x, layer.activation)


def forward(spec: ArchSpec, tensors: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Evaluate the network described by ``spec`` and ``tensors`` on a batch ``x`` of shape ``(n, *input_shape)``."""
    last = collections.deque(through_layers(spec, x, lambda ly, h, done: apply_layer(ly, tensors, h, done)), maxlen=1)
    return last[0] if last else x


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


_ACT_MODULES = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def spec_module(spec: ArchSpec, tensors: Mapping[str, torch.Tensor]) -> nn.Sequential:
    """A plain ``nn.Sequential`` computing the same function as ``spec`` with a copy of ``tensors``.

    Batch norm is refused (fold it first with :func:`raywse.graph.neural_graph.fold_batchnorm`).
    """
    mods: list[nn.Module] = []
    for layer in spec.layers:
        if layer.kind == "linear":
            w = tensors[f"{layer.name}.weight"]
            mod: nn.Module = nn.Linear(w.shape[1], w.shape[0])
        elif layer.kind == "conv2d":
            w = tensors[f"{layer.name}.weight"]
            mod = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=layer.stride, padding=layer.padding)
        elif layer.kind == "global_avg_pool":
            mod = _GlobalAvgPool()
        elif layer.kind == "flatten":
            mod = nn.Flatten()
        elif layer.kind == "max_pool2d":
            mod = nn.MaxPool2d(layer.kernel_size)
        elif layer.kind == "avg_pool2d":
            mod = nn.AvgPool2d(layer.kernel_size)
        elif layer.kind == "prelu":
            mod = nn.PReLU(len(tensors[f"{layer.name}.weight"]))
        else:
            raise SpecError(f"spec_module does not build {layer.kind} layers (fold batch norm first; no residuals)")
        if layer.parametric:
            with torch.no_grad():
                mod.weight.copy_(tensors[f"{layer.name}.weight"])
                if layer.kind != "prelu":
                    mod.bias.copy_(tensors[f"{layer.name}.bias"])
        mods.append(mod)
        if layer.activation != "none":
            mods.append(_ACT_MODULES[layer.activation]())
    return nn.Sequential(*mods)


def module_tensors(spec: ArchSpec, module: nn.Sequential) -> dict[str, torch.Tensor]:
    """Inverse of :func:`spec_module`: the module's parameters under the spec's tensor names."""
    params = [p.detach().clone() for p in module.parameters()]
    return dict(zip(spec.tensor_names(), params, strict=True))
