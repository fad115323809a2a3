"""Zoo architectures: the families a zoo trains (MLP, CNN, ResNet, transformer), their specs, parameter shapes and
seeded init."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import torch

from raywse.core.spec import ATTENTION_PROJECTIONS, ArchSpec, Layer, layer_shapes

#: Families whose models read images (``[C, H, W]`` inputs; a transformer also reads a 1-D signal as ``[1, L]``).
IMAGE_FAMILIES = ("cnn", "resnet", "transformer")
#: The zoo's architecture families, in ``ZooConfig.arch_pool`` order.
FAMILIES = ("mlp", *IMAGE_FAMILIES)
#: Most positions a zoo transformer attends over (its stem downsamples until the map has at most this many).
MAX_TOKENS = 16


@dataclass(frozen=True)
class Arch:
    """A zoo architecture: an MLP (``widths`` = hidden widths); a CNN (``channels``/``strides`` of 3×3 convs, global
    average pooling, then ``widths`` hidden linear layers and the linear head); or a ResNet (a 3×3 stem conv of
    ``channels[0]``/``strides[0]``, then one basic block per further ``channels``/``strides`` entry — two 3×3 convs
    with batch norm and an identity shortcut, or a 1×1 projection where width or stride changes — global average
    pooling and the linear head); or a transformer (a 3×3 stem conv of ``channels[0]``/``strides[0]`` — a 1-D conv
    of width 3 on a ``[1, L]`` signal — and further stride-2 ones of that width while the map has more than
    :data:`MAX_TOKENS` positions, whose map is read as a sequence of positions, then one post-norm block per
    ``widths`` entry — ``heads``-head self-attention,
    its output projection, a residual add and a layer norm, then a feed-forward layer of that width and one back,
    a residual add and a layer norm — and the linear head on the flattened positions)."""

    family: str
    widths: tuple[int, ...] = ()
    activation: str = "relu"
    channels: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    heads: int = 0

    def spec(self, input_shape: tuple[int, ...]) -> ArchSpec:
        """The :class:`ArchSpec` of this architecture; layer ``i`` owns ``layers.{i}.*`` (an add layer: its
        projection)."""
        if self.family == "resnet":
            return self._resnet_spec(input_shape)
        if self.family == "transformer":
            return self._transformer_spec(input_shape)
        layers: list[Layer] = []
        for stride in self.strides:
            layers.append(Layer("conv2d", f"layers.{len(layers)}", self.activation, stride=stride, padding=1))
        if self.family == "cnn":
            layers.append(Layer("global_avg_pool"))
        for _ in self.widths:
            layers.append(Layer("linear", f"layers.{len(layers)}", self.activation))
        layers.append(Layer("linear", f"layers.{len(layers)}", "none"))
        return ArchSpec(tuple(input_shape), tuple(layers))

    def _resnet_spec(self, input_shape: tuple[int, ...]) -> ArchSpec:
        layers: list[Layer] = []

        def append(kind: str, activation: str = "none", **fields) -> str:
            name = f"layers.{len(layers)}"
            layers.append(Layer(kind, fields.pop("name", name), activation, **fields))
            return name

        previous = append("conv2d", stride=self.strides[0], padding=1)
        append("batchnorm", self.activation)
        width = self.channels[0]
        for out, stride in zip(self.channels[1:], self.strides[1:], strict=True):
            append("conv2d", stride=stride, padding=1)
            append("batchnorm", self.activation)
            last = append("conv2d", padding=1)
            append("batchnorm")
            projection = f"layers.{len(layers)}" if (out != width or stride != 1) else ""
            append("add", self.activation, name=projection, stride=stride, source=previous)
            previous, width = last, out
        layers.append(Layer("global_avg_pool"))
        append("linear")
        return ArchSpec(tuple(input_shape), tuple(layers))

    def _transformer_spec(self, input_shape: tuple[int, ...]) -> ArchSpec:
        layers: list[Layer] = []

        def append(kind: str, activation: str = "none", **fields) -> str:
            name = f"layers.{len(layers)}"
            layers.append(Layer(kind, name, activation, **fields))
            return name

        conv = "conv1d" if len(input_shape) == 2 else "conv2d"  # a [C, L] signal's map is a sequence already
        for stride in self._stem_strides(input_shape):
            stream = append(conv, self.activation, stride=stride, padding=1)
        if conv == "conv2d":
            layers.append(Layer("to_sequence"))
        for _ in self.widths:
            append("attention", heads=self.heads)
            append("linear")
            layers.append(Layer("add", source=stream))
            normed = append("layernorm")
            append("linear", self.activation)
            append("linear")
            layers.append(Layer("add", source=normed))
            stream = append("layernorm")
        layers.append(Layer("flatten"))  # the head reads every position: attention alone does not know where
        append("linear")
        return ArchSpec(tuple(input_shape), tuple(layers))

    def _stem_strides(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """A transformer's stem: its first conv, then stride-2 convs until the map has at most
        :data:`MAX_TOKENS` positions (attention's cost grows with their square: 8×8 ``digits`` give 16 positions
        after one conv, 14×14 ``mnist14`` 49 after one and 16 after two, 40-sample ``mnist1d`` signals 20 after one
        and 10 after two)."""
        strides, spatial = [self.strides[0]], tuple(input_shape[1:])
        spatial = tuple((d - 1) // strides[0] + 1 for d in spatial)
        while math.prod(spatial) > MAX_TOKENS:
            strides.append(2)
            spatial = tuple((d - 1) // 2 + 1 for d in spatial)
        return tuple(strides)

    def _node_widths(self, num_classes: int, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Output width of every linear/conv layer, in spec order."""
        if self.family == "resnet":
            return (self.channels[0], *(c for c in self.channels[1:] for _ in range(2)), num_classes)
        if self.family == "transformer":
            stem = (self.channels[0],) * len(self._stem_strides(input_shape))
            return (*stem, *(w for ffn in self.widths for w in (self.channels[0], ffn, self.channels[0])), num_classes)
        return (*self.channels, *self.widths, num_classes)

    def param_shapes(self, input_shape: tuple[int, ...], num_classes: int) -> list[tuple[str, tuple[int, ...]]]:
        """``(tensor name, shape)`` of every parameter, in the spec's tensor order."""
        spec = self.spec(input_shape)
        fan_in = input_shape[0]
        outs = iter(self._node_widths(num_classes, input_shape))
        widths: dict[str, int] = {}  # output width of each linear/conv layer (what a residual reads)
        shapes: list[tuple[str, tuple[int, ...]]] = []
        spatial = tuple(input_shape[1:])  # the map's size, for a flatten
        for layer in spec.layers:
            if layer.kind in ("linear", "conv1d", "conv2d"):
                out = next(outs)
                kernel = {"linear": (), "conv1d": (3,), "conv2d": (3, 3)}[layer.kind]
                shapes += [(f"{layer.name}.weight", (out, fan_in, *kernel)), (f"{layer.name}.bias", (out,))]
                fan_in = widths[layer.name] = out
                if kernel:  # 3 (x3), padding 1
                    spatial = tuple((d - 1) // layer.stride + 1 for d in spatial)
            elif layer.kind == "flatten":
                fan_in *= math.prod(spatial)
            elif layer.kind == "attention":  # queries, keys and values as wide as what it reads
                shapes += [(f"{layer.name}.{p}.{w}", (fan_in, fan_in)[: 2 if w == "weight" else 1])
                           for p in ATTENTION_PROJECTIONS for w in ("weight", "bias")]  # fmt: skip
                widths[layer.name] = fan_in
            elif layer.kind == "layernorm":
                shapes += [(f"{layer.name}.{p}", (fan_in,)) for p in ("weight", "bias")]
                widths[layer.name] = fan_in
            elif layer.kind == "batchnorm":
                shapes += [(f"{layer.name}.{p}", (fan_in,)) for p in ("weight", "bias", "running_mean", "running_var")]
            elif layer.kind == "add" and layer.name:
                projection = (fan_in, widths[layer.source], 1, 1)
                shapes += [(f"{layer.name}.weight", projection), (f"{layer.name}.bias", (fan_in,))]
        return shapes

    def describe(self) -> str:
        """Short human text, e.g. ``MLP 64-32 tanh`` or ``CNN conv 8-16/s2 + GAP + linear relu``."""
        if self.family == "mlp":
            return f"MLP hidden {'-'.join(map(str, self.widths))} {self.activation}"
        convs = "-".join(f"{c}/s{s}" if s > 1 else str(c) for c, s in zip(self.channels, self.strides, strict=True))
        if self.family == "resnet":
            return f"ResNet stem-blocks {convs} {self.activation}, batch norm + global avg pool + linear head"
        if self.family == "transformer":
            ffn = "-".join(map(str, self.widths))
            return (f"Transformer conv3(x3) stem {convs} (+ stride-2 convs to <= {MAX_TOKENS} positions), "
                    f"{len(self.widths)} post-norm blocks ({self.heads} heads, "
                    f"feed-forward {ffn} {self.activation}) + linear head on every position")  # fmt: skip
        head = f" + hidden {'-'.join(map(str, self.widths))}" if self.widths else ""
        return f"CNN conv3x3 {convs} {self.activation} + global avg pool{head} + linear head"

    def to_dict(self) -> dict:
        return asdict(self)

    def macs_per_sample(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        """Multiply-accumulates of one forward pass on one sample."""
        spec = self.spec(input_shape)
        shapes = dict(self.param_shapes(input_shape, num_classes))
        outputs = layer_shapes(spec, shapes)
        total = 0
        for layer, out in zip(spec.layers, outputs, strict=True):
            if layer.kind in ("linear", "conv1d", "conv2d") or (layer.kind == "add" and layer.name):
                total += math.prod(shapes[f"{layer.name}.weight"]) * math.prod(out[1:])
            elif layer.kind == "attention":  # three projections per position, then scores and the weighted sum
                width, positions = out
                total += 3 * width * width * positions + 2 * positions * positions * width
        return total


def normalised_biases(spec: ArchSpec) -> list[str]:
    """Biases of the linear/conv layers a batch norm directly follows: the norm subtracts them again, so they stay 0
    (as ``bias=False`` layers do in PyTorch)."""
    pairs = itertools.pairwise(spec.layers)
    return [f"{a.name}.bias" for a, b in pairs if a.kind in ("linear", "conv1d", "conv2d") and b.kind == "batchnorm"]


def init_params(arch: Arch, input_shape: tuple[int, ...], num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """PyTorch-default init (uniform ±1/sqrt(fan_in) for weights and biases, batch norm as new) from a seeded
    generator."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    shapes = dict(arch.param_shapes(input_shape, num_classes))
    for name, shape in shapes.items():
        if name.endswith(".weight") and len(shape) > 1:
            bound = 1.0 / math.sqrt(math.prod(shape[1:]))
            out[name] = (torch.rand(shape, generator=gen) * 2 - 1) * bound
            bias = name.removesuffix("weight") + "bias"
            out[bias] = (torch.rand(shapes[bias], generator=gen) * 2 - 1) * bound
        elif name.endswith(("running_var", ".weight")):
            out[name] = torch.ones(shape)
        elif name not in out:
            out[name] = torch.zeros(shape)
    for name in normalised_biases(arch.spec(input_shape)):
        out[name].zero_()
    return out
