"""Architecture specs: the machine-readable description of what a checkpoint computes.

An :class:`ArchSpec` is a sequential chain of :class:`Layer` s plus the input shape. Together with a checkpoint's
tensors it fully determines the network's function (:func:`forward`). The zoo writes specs into its manifest and into
each safetensors file's metadata; graphify reads them back, or infers one for foreign files
(:mod:`raywse.graph.infer`).

Tensor naming follows ``torch.nn.Sequential``: layer ``name`` owns ``{name}.weight`` / ``{name}.bias`` (and
``running_mean`` / ``running_var`` for batch norm; a ``prelu`` layer owns ``{name}.weight`` only, its slopes).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

PARAMETRIC_KINDS = ("linear", "conv2d", "batchnorm", "prelu")
PARAMETER_FREE_KINDS = ("flatten", "global_avg_pool", "max_pool2d", "avg_pool2d")
LAYER_KINDS = PARAMETRIC_KINDS + PARAMETER_FREE_KINDS

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

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise SpecError(f"unsupported layer kind {self.kind!r} (supported: {', '.join(LAYER_KINDS)})")
        if self.activation not in ACTIVATIONS or self.activation == "prelu":
            named = ", ".join(a for a in ACTIVATIONS if a != "prelu")
            raise SpecError(f"unsupported activation {self.activation!r} (supported: {named}; PReLU is a layer)")
        if self.kind in PARAMETRIC_KINDS and not self.name:
            raise SpecError(f"{self.kind} layer needs a tensor name prefix")

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
        return names

    def validate(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Raise :class:`SpecError` unless ``tensors`` have exactly the names, shapes and finite values the spec needs.

        Checks by running a shape-only pass through the chain, so a conv/linear mismatch is caught here with the
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
        with torch.no_grad():
            probe = {k: torch.zeros_like(tensors[k], dtype=torch.float32, device="meta") for k in expected}
            # activations do not change shapes; dropping them lets specs with "unknown" activations validate
            shapes_only = ArchSpec(self.input_shape, tuple(replace(ly, activation="none") for ly in self.layers))
            try:
                forward(shapes_only, probe, torch.zeros((1, *self.input_shape), device="meta"))
            except RuntimeError as exc:
                raise SpecError(f"tensor shapes do not chain: {exc}") from exc

    def output_size(self, tensors: Mapping[str, torch.Tensor]) -> int:
        """Number of output neurons (rows of the last linear layer)."""
        last = [ly for ly in self.layers if ly.kind in ("linear", "conv2d")][-1]
        return int(tensors[f"{last.name}.weight"].shape[0])


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


def forward(spec: ArchSpec, tensors: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Evaluate the network described by ``spec`` and ``tensors`` on a batch ``x`` of shape ``(n, *input_shape)``."""
    for layer in spec.layers:
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
        elif layer.kind == "flatten":
            x = x.flatten(1)
        elif layer.kind == "global_avg_pool":
            x = x.mean(dim=(2, 3))
        elif layer.kind == "max_pool2d":
            x = F.max_pool2d(x, layer.kernel_size)
        elif layer.kind == "avg_pool2d":
            x = F.avg_pool2d(x, layer.kernel_size)
        x = activate(x, layer.activation)
    return x


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
            raise SpecError(f"spec_module does not build {layer.kind} layers (fold batch norm first)")
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
