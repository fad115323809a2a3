"""Spec inference for torchvision's ResNet naming: a ``conv1``/``bn1`` stem, blocks ``layer{i}.{j}`` of two
(``BasicBlock``) or three (``Bottleneck``) ``conv{k}``/``bn{k}`` pairs with an identity shortcut or a
``downsample.0``/``downsample.1`` projection (its batch norm folded in), global average pooling and ``fc``.

Each block ends in an ``add`` layer reading the previous block's output. What leaves no tensors follows torchvision:
ReLU after every batch norm but the block's last and after every add, stride 2 in the first block of ``layer2`` and
later (on ``conv1`` of a basic block, ``conv2`` of a bottleneck), padding ``k // 2``. The stem's max pooling is left
out, so the spec's spatial sizes differ from the network's; the graph does not depend on them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from raywse.core.spec import ArchSpec, Layer, SpecError
from raywse.graph.names import NOMINAL_SPATIAL, natural_key
from raywse.graph.neural_graph import fold_bn_params

_BLOCK = re.compile(r"^(layer\d+\.\d+)\.conv1\.weight$")
_BN = ("weight", "bias", "running_mean", "running_var")


def is_torchvision_resnet(tensors: Mapping[str, torch.Tensor]) -> bool:
    """Whether the tensor names follow torchvision's ResNet (stem ``conv1``, blocks ``layer{i}.{j}``, head ``fc``)."""
    return "conv1.weight" in tensors and "fc.weight" in tensors and any(_BLOCK.match(n) for n in tensors)


def resnet_spec_and_tensors(tensors: Mapping[str, torch.Tensor]) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """The spec of a torchvision-named ResNet and tensors matching it exactly (missing conv biases as zeros, the
    projections' batch norms folded); :class:`SpecError` naming what does not fit the layout."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in tensors:
            raise SpecError(f"torchvision ResNet layout without {name}")
        used.add(name)
        return tensors[name]

    def conv(name: str, stride: int = 1) -> Layer:
        w = take(f"{name}.weight")
        if w.dim() != 4 or w.shape[2] != w.shape[3]:
            raise SpecError(f"unsupported layer {name}: weight {list(w.shape)} is not a square conv kernel")
        out[f"{name}.weight"] = w
        out[f"{name}.bias"] = take(f"{name}.bias") if f"{name}.bias" in tensors else torch.zeros(len(w), dtype=w.dtype)
        return Layer("conv2d", name, stride=stride, padding=int(w.shape[2]) // 2)

    def batchnorm(name: str, activation: str) -> Layer:
        for param in _BN:
            out[f"{name}.{param}"] = take(f"{name}.{param}")
        used.add(f"{name}.num_batches_tracked")
        return Layer("batchnorm", name, activation)

    layers = [conv("conv1"), batchnorm("bn1", "relu")]
    previous = "conv1"
    for block in sorted({m.group(1) for n in tensors if (m := _BLOCK.match(n))}, key=natural_key):
        stage, index = (int(v) for v in re.findall(r"\d+", block))
        stride = 2 if stage > 1 and index == 0 else 1
        convs = [f"{block}.conv{k}" for k in (1, 2, 3) if f"{block}.conv{k}.weight" in tensors]
        for k, name in enumerate(convs, start=1):
            strided = k == (2 if len(convs) == 3 else 1)
            layers.append(conv(name, stride if strided else 1))
            layers.append(batchnorm(f"{block}.bn{k}", "relu" if k < len(convs) else "none"))
        projection = ""
        if f"{block}.downsample.0.weight" in tensors:
            projection = f"{block}.downsample.0"
            conv(projection)
            bn = {p: take(f"{block}.downsample.1.{p}") for p in _BN}
            used.add(f"{block}.downsample.1.num_batches_tracked")
            w, b = fold_bn_params(out[f"{projection}.weight"], out[f"{projection}.bias"], bn, 1e-5)
            out[f"{projection}.weight"], out[f"{projection}.bias"] = w, b
        layers.append(Layer("add", projection, "relu", stride=stride, source=previous))
        previous = convs[-1]
    fc = take("fc.weight")
    out["fc.weight"], out["fc.bias"] = fc, take("fc.bias") if "fc.bias" in tensors else torch.zeros(len(fc))
    layers += [Layer("global_avg_pool"), Layer("linear", "fc")]
    extra = sorted(set(tensors) - used - {"fc.bias"} - {n for n in tensors if n.endswith("num_batches_tracked")})
    if extra:
        raise SpecError(f"tensors outside torchvision's ResNet layout: {', '.join(extra[:3])}")
    channels = int(out["conv1.weight"].shape[1])
    spec = ArchSpec((channels, NOMINAL_SPATIAL, NOMINAL_SPATIAL), tuple(layers))
    spec.validate(out)
    return spec, out
