"""Probe features: what every neuron of a network does on a fixed set of probe inputs.

At graph-construction time the network runs on ``P`` probe inputs of its input space and each node keeps its
``P`` responses (``probe_act`` in :mod:`raywse.graph.schema`): an input node the probe's value there (the channel
mean for image and sequence inputs), a hidden neuron its output after the activation and the layers that follow it
(averaged over space or steps for conv channels), an LSTM or GRU gate its value after its nonlinearity, an output
neuron its logit. Hidden responses permute with their neurons, so a permutation-invariant encoder stays exactly
invariant.

Where probes come from is the caller's choice and is recorded per graph (``probe_source``): the *train* split of the
model's dataset for zoo models (:func:`raywse.zoo.datasets.probe_inputs`), a user's probe file for foreign
checkpoints, seeded Gaussian probes at the input shape, or probes (and a hidden activation) inferred from a
catalogue of known probe sets (:mod:`raywse.graph.probe_inference`); a network that reads token ids always gets
seeded random token sequences (:func:`token_probes`), its input nodes (table rows) the share of positions that pick
them. A network whose activations are unknown and not inferred cannot be run: its responses are zeros and its
source is :data:`NO_PROBES`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from raywse.core.forward import RECURRENT_STATES, activate, apply_layer, attention_projections, recurrent_states
from raywse.core.spec import EMBEDDING_TABLES, ArchSpec, SpecError
from raywse.graph.chain import Chain

#: Probe inputs per network (the width of ``probe_act``).
NUM_PROBES = 64
#: ``probe_source`` of a graph whose network could not be run (responses are zeros).
NO_PROBES = "none"
#: How the source of Gaussian probes begins (nothing was known of the input domain).
GAUSSIAN = "gaussian:"
#: Separates a probe source's rows from what qualifies them for one model without changing which inputs they are
#: (its normalisation, a note): ``train:digits|standard``.
NORM_SEPARATOR = "|"


#: Ends a probe source whose probes or activation were inferred (``train:digits|signed inferred relu``):
#: :mod:`raywse.graph.probe_inference`.
INFERRED = " inferred"
#: How a zoo probe set's source begins (``train:digits|unit``), and how a probe file names its copy of one.
ZOO_ROWS_PREFIX = "train:"


def probe_rows(source: str) -> str:
    """The identity of the probe inputs behind ``source``, whatever their normalisation: responses of two networks
    are comparable exactly when their sources share it (``train:digits|unit`` and ``train:digits|standard`` do;
    Gaussian probes of different input shapes do not; an inference note is not part of it)."""
    return source.partition(INFERRED)[0].split(NORM_SEPARATOR)[0]


@dataclass(frozen=True)
class ProbeSet:
    """``inputs``: ``[P, *input_shape]`` (or flat ``[P, d]``) probe inputs; ``source``: where they came from."""

    inputs: Tensor
    source: str


#: Picks the probes of a network from its input shape (no batch dimension).
ProbeChooser = Callable[[tuple[int, ...]], ProbeSet]


def gaussian_probes(input_shape: tuple[int, ...], n: int = NUM_PROBES, seed: int = 0) -> ProbeSet:
    """``n`` seeded standard-normal probes at ``input_shape``: the choice when nothing is known of the input space."""
    gen = torch.Generator().manual_seed(seed)
    shape = "x".join(str(d) for d in input_shape)
    return ProbeSet(torch.randn((n, *input_shape), generator=gen), f"{GAUSSIAN}{shape}")


class ProbeFile:
    """A user's probe file (``.npy`` or ``.npz``): each array ``[P, ...]`` serves networks of its per-probe size.

    Calling it with an input shape returns the matching probes (first :data:`NUM_PROBES` rows), or Gaussian probes
    when no array of that size is in the file (the source says so). An array named ``train:<dataset>`` declares that
    it holds the zoo's probe rows of that dataset (``raywse probes``) in the model's own input normalisation: its
    source then shares :func:`probe_rows` with the zoo's models of that dataset, so their responses are compared. A
    missing or unreadable file is an ``OSError`` / ``ValueError`` with the path, raised at construction.
    """

    def __init__(self, path: str | os.PathLike, n: int = NUM_PROBES):
        self.path, self.n = Path(path), n
        if not self.path.is_file():
            raise FileNotFoundError(f"probe file not found: {self.path}")
        try:
            loaded = np.load(self.path, allow_pickle=False)
            arrays = dict(loaded) if isinstance(loaded, Mapping) or hasattr(loaded, "files") else {"": loaded}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: not a readable .npy/.npz probe file ({exc})") from exc
        self.by_size: dict[int, tuple[str, np.ndarray]] = {}
        for name, arr in arrays.items():
            shown = name or "(npy)"
            if arr.ndim < 2 or not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
                raise ValueError(f"{self.path}: array {shown} must be finite floats [P, ...], got {arr.shape}")
            if len(arr) < n:
                raise ValueError(f"{self.path}: array {shown} has {len(arr)} probes, at least {n} are needed")
            self.by_size.setdefault(int(np.prod(arr.shape[1:])), (name, arr))

    def __call__(self, input_shape: tuple[int, ...]) -> ProbeSet:
        size = int(np.prod(input_shape))
        if size not in self.by_size:
            probes = gaussian_probes(input_shape, self.n)
            note = f"no input of size {size} in {self.path.name}"
            return ProbeSet(probes.inputs, f"{probes.source}{NORM_SEPARATOR}{note}")
        name, arr = self.by_size[size]
        inputs = torch.from_numpy(np.ascontiguousarray(arr[: self.n], dtype=np.float32)).reshape(-1, *input_shape)
        if name.startswith(ZOO_ROWS_PREFIX):  # the zoo's rows, in this model's normalisation
            return ProbeSet(inputs, f"{name}{NORM_SEPARATOR}file:{self.path.name}")
        return ProbeSet(inputs, f"file:{self.path.name}" + (f":{name}" if name else ""))


def token_probes(vocab: int, length: int, n: int = NUM_PROBES, seed: int = 0) -> ProbeSet:
    """``n`` seeded sequences of ``length`` token ids drawn uniformly from ``[0, vocab)`` (as floats: probe inputs are
    float tensors; ids below 2^24 are exact): the probes of a network that reads token ids."""
    gen = torch.Generator().manual_seed(seed)
    return ProbeSet(torch.randint(0, vocab, (n, length), generator=gen).float(), f"tokens:{vocab}x{length}")


def _table_rows(ids: Tensor, rows: tuple[int, int, int]) -> Tensor:
    """``[P, sum(rows)]`` share of each probe's positions that picks each table row: tokens, positions, type 0."""
    tokens, positions, types = rows
    counts = torch.zeros(len(ids), tokens).scatter_add_(1, ids.long(), torch.ones_like(ids))
    at = torch.zeros(len(ids), positions)
    at[:, : ids.shape[1]] = 1.0
    kinds = torch.zeros(len(ids), types)
    kinds[:, 0] = ids.shape[1]
    return torch.cat([counts, at, kinds], dim=1) / ids.shape[1]


def _node_values(x: Tensor) -> Tensor:
    """``[P, nodes]`` values of one node layer's output: channels are averaged over space (or sequence steps)."""
    return x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x


def probe_responses(chain: Chain, spec: ArchSpec, tensors: Mapping[str, Tensor], inputs: Tensor) -> Tensor:
    """``[N, P]`` responses of every node of the neural graph of ``chain`` (node order of the schema).

    ``spec`` must be batch-norm free (:func:`raywse.graph.neural_graph.fold_batchnorm`). A node layer's output is read
    after its activation and followers, before a ``flatten`` (so conv channels stay channels). Raises
    :class:`SpecError` for an activation that cannot be evaluated (``unknown``).
    """
    x = inputs.reshape(len(inputs), *spec.input_shape).float()
    finished: dict[str, Tensor] = {}  # what each node layer hands on (residual adds read it)
    value = None
    for layer in chain.leading:
        if layer.kind == "flatten" and value is None:  # input nodes are channels: read them before the flatten
            value = _node_values(x)
        x = apply_layer(layer, tensors, x, finished)
    first = chain.node_layers[0].layer
    if first.kind == "embedding":
        rows = tuple(len(tensors[f"{first.name}.{t}.weight"]) for t in EMBEDDING_TABLES)
        columns = [_table_rows(x, rows)]
    elif first.kind == "patch_embedding":  # the class token and every position row: one of the positions each
        positions = len(tensors[f"{first.name}.position_embeddings"])
        columns = [torch.cat([_node_values(x), torch.full((len(x), 1 + positions), 1 / positions)], dim=1)]
    else:
        columns = [value if value is not None else _node_values(x)]
    for nl in chain.node_layers:
        if nl.layer.kind in RECURRENT_STATES:  # its gates are nodes too
            h, gates = recurrent_states(nl.layer, tensors, x)
            columns.append(_node_values(gates))
            x = activate(h, nl.layer.activation)
        elif nl.layer.kind == "attention":  # and so are its queries and keys
            q, k, attended = attention_projections(nl.layer, tensors, x)
            columns += [_node_values(q), _node_values(k)]
            x = activate(attended, nl.layer.activation)
        else:
            x = apply_layer(nl.layer, tensors, x, finished)
        value = None
        for follower in nl.followers:
            if follower.kind == "flatten" and value is None:
                value = _node_values(x)
            x = apply_layer(follower, tensors, x, finished)
        finished[nl.layer.name] = x
        columns.append(value if value is not None else _node_values(x))
    out = torch.cat(columns, dim=1).T.contiguous()
    if not torch.isfinite(out).all():
        raise SpecError("probe responses are not finite")
    return out


def responses_or_none(
    chain: Chain, spec: ArchSpec, tensors: Mapping[str, Tensor], probes: ProbeSet
) -> tuple[Tensor, str]:
    """``(responses [N, P], probe source)``; zeros and :data:`NO_PROBES` when the network cannot be run (an unknown
    activation, or responses that are not finite)."""
    try:
        return probe_responses(chain, spec, tensors, probes.inputs), probes.source
    except SpecError:
        nodes = chain.input_nodes + sum(nl.num_nodes for nl in chain.node_layers)
        return torch.zeros(nodes, len(probes.inputs)), NO_PROBES
