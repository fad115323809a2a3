"""One checkpoint file → its neural graph: read (safetensors only), find or infer the spec, validate, convert.

The spec comes from the caller (a zoo manifest), else the file's ``layer_spec`` metadata, else the user's spec file
(:func:`read_spec_file`, for foreign checkpoints whose tensor names cannot tell their architecture), else inference
(:mod:`raywse.graph.infer`, helped by a Hugging Face ``config.json`` next to the file: :func:`model_config`). A
linear/conv layer a spec names without a bias tensor reads a zero bias.

Every failure is a :class:`GraphifyError` naming the stage it failed at and a one-line reason, so the batch
pipeline (:mod:`raywse.data.graphify`) can keep it as a row and search can report it to the user.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor
from torch_geometric.data import Data

from raywse.core.config import ConfigError
from raywse.core.io import CheckpointError, load_checkpoint
from raywse.core.spec import ArchSpec, SpecError, with_zero_biases
from raywse.graph.infer import ACTIVATION_HINT, infer_spec_and_tensors, with_hidden_activation
from raywse.graph.neural_graph import to_neural_graph
from raywse.graph.probe_inference import CANDIDATE_ACTIVATIONS, ProbeCatalogue, infer_probes
from raywse.graph.probes import GAUSSIAN, ProbeChooser, gaussian_probes


def read_spec_file(path: str | os.PathLike) -> str:
    """The JSON text of a user's spec file (an :class:`~raywse.core.spec.ArchSpec`: ``input_shape`` and ``layers``),
    checked to parse; :class:`~raywse.core.config.ConfigError` naming the file and the reason otherwise."""
    try:
        text = Path(path).read_text()
        ArchSpec.from_json(text)
    except (OSError, UnicodeDecodeError, SpecError) as exc:
        raise ConfigError(f"spec file {path}: {exc}") from exc
    return text


def graphify_checkpoint(
    path: str,
    model_id: str,
    layer_spec: str = "",
    probes_for: Callable[[Mapping[str, str]], ProbeChooser] | None = None,
    fallback_spec: str = "",
    activation: str = "",
    catalogue: ProbeCatalogue | None = None,
) -> Data:
    """Read one checkpoint and build its neural graph, probed with ``probes_for(file metadata)`` (Gaussian probes by
    default); ``fallback_spec`` (JSON) is the spec of a file without one, ``activation`` the hidden activation of an
    inferred chain, ``catalogue`` the known probe sets tried where the input domain or the activation is unknown
    (:func:`graphify_tensors`). Raises :class:`GraphifyError` with stage and reason."""
    try:
        tensors, metadata = load_checkpoint(path)
    except CheckpointError as exc:
        raise GraphifyError("read", str(exc)) from exc
    probes = probes_for(metadata) if probes_for is not None else gaussian_probes
    hints = model_config(Path(path).parent)
    return graphify_tensors(
        tensors, metadata, model_id, layer_spec, probes, fallback_spec, hints, activation, catalogue
    )


#: What spec inference reads from a Hugging Face ``config.json`` next to a checkpoint.
#: (BERT's and ViT's names, then GPT-2's.)
CONFIG_HINTS = (
    "num_attention_heads", "layer_norm_eps", "hidden_act", "image_size", "pooler_act", "n_head", "layer_norm_epsilon",
    "activation_function", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
)  # fmt: skip


def model_config(directory: Path) -> dict[str, object]:
    """The :data:`CONFIG_HINTS` of the ``config.json`` in ``directory`` (empty when there is none or it does not
    parse: inference then refuses what it needed them for, with its reason)."""
    try:
        raw = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: raw[k] for k in CONFIG_HINTS if isinstance(raw, dict) and k in raw}


def graphify_tensors(
    tensors: Mapping[str, Tensor],
    metadata: Mapping[str, str],
    model_id: str,
    layer_spec: str = "",
    probes: ProbeChooser = gaussian_probes,
    fallback_spec: str = "",
    hints: Mapping[str, object] | None = None,
    activation: str = "",
    catalogue: ProbeCatalogue | None = None,
) -> Data:
    """The neural graph of checkpoint tensors already read (e.g. an upload), the spec from ``layer_spec``, the
    file's metadata, ``fallback_spec`` or inference (given ``hints``: :func:`model_config`, and the user's
    ``activation`` of an inferred chain). Given a ``catalogue``, where ``probes`` are Gaussian (nothing known of the
    input domain) its probe sets are tried, and where the hidden activation is unknown every candidate activation
    (:data:`~raywse.graph.probe_inference.CANDIDATE_ACTIVATIONS`) on those or the caller's probes; the candidate the
    network answers most informatively is kept (:mod:`raywse.graph.probe_inference`). Raises
    :class:`GraphifyError` with stage and reason."""
    hints = {**(hints or {}), **({ACTIVATION_HINT: activation} if activation else {})}
    spec_json = layer_spec or metadata.get("layer_spec", "") or fallback_spec
    try:
        if spec_json:
            spec = ArchSpec.from_json(spec_json)
            tensors = with_zero_biases(spec, tensors)
        else:
            spec, tensors = infer_spec_and_tensors(tensors, hints)
    except SpecError as exc:
        raise GraphifyError("spec", str(exc)) from exc
    try:
        spec.validate(tensors)
    except SpecError as exc:
        raise GraphifyError("validate", str(exc)) from exc
    as_float32 = all(v.dtype == torch.float32 for v in tensors.values())  # else converting can overflow: check again
    tensors = {k: v.float() for k, v in tensors.items()}
    try:
        if catalogue is not None:
            spec, probes = _inferred_probes(spec, tensors, probes, catalogue)
        return to_neural_graph(tensors, spec, model_id, probes, validated=as_float32)
    except (SpecError, RuntimeError, ValueError) as exc:
        raise GraphifyError("graph", str(exc)) from exc


def _inferred_probes(
    spec: ArchSpec, tensors: Mapping[str, Tensor], probes: ProbeChooser, catalogue: ProbeCatalogue
) -> tuple[ArchSpec, ProbeChooser]:
    """``spec`` and ``probes``, or, where the input domain (Gaussian ``probes``) or the activation is unknown, the
    spec with the inferred activation and the inferred probes: the catalogue's where the domain is unknown, else the
    caller's (only the activation is inferred). Unchanged when no candidate runs."""
    if any(layer.kind == "embedding" for layer in spec.layers):  # token ids: probed on random tokens, always
        return spec, probes
    unknown = any(layer.activation == "unknown" for layer in spec.layers)
    given = probes(tuple(spec.input_shape))
    gaussian = given.source.startswith(GAUSSIAN)
    if not unknown and not gaussian:
        return spec, lambda _: given
    found = infer_probes(
        lambda a: with_hidden_activation(spec, a), tensors, tuple(spec.input_shape),
        catalogue if gaussian else lambda _: (given,), CANDIDATE_ACTIVATIONS if unknown else ("",),
    )  # fmt: skip
    if found is None:
        return spec, lambda _: given
    return with_hidden_activation(spec, found.activation), lambda _: found.probes


class GraphifyError(Exception):
    """Why one checkpoint could not be graphified (kept as a row, never raised out of the pipeline)."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
