"""Probes for a network nobody described: its input domain, and its hidden activation, inferred from what it does.

A checkpoint written by other code usually comes with neither: its tensors cannot show its hidden activation, and
nothing says how its inputs were normalised. Responses are only comparable between networks probed on the same
inputs, so such a network is tried on every known probe set of its input size (a :data:`ProbeCatalogue`: for
instance the zoo's probe rows of each dataset under common input normalisations) and, when its activation is unknown,
with every activation raywse can run; the candidate kept is the one on which the network's predictions carry the most
information about its probes — the mutual information between probe and predicted class, ``H(mean p) - mean H(p)``
of the output softmax ``p`` (the information-maximisation criterion of test-time adaptation, e.g. Liang et al.'s
SHOT, 2020): high when the network answers each probe decisively and different probes differently, as a classifier
does on inputs of its own domain. No label is read. The choice is recorded in the graph's ``probe_source``
(``train:digits|signed inferred relu``), so responses are compared with those of the zoo's models of that dataset.

A network whose output is one logit is read as a binary classifier (sigmoid); one no candidate runs on keeps the
probes its caller gave.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from raywse.core.forward import forward
from raywse.core.spec import RUNNABLE_ACTIVATIONS, ArchSpec, SpecError
from raywse.graph.probes import INFERRED, ProbeSet

#: The known probe sets of one input size (flat ``[P, size]`` inputs, ``source`` naming their rows and normalisation);
#: empty when none is known.
ProbeCatalogue = Callable[[int], Sequence[ProbeSet]]
#: Hidden activations tried when a network's is unknown (``none`` would make a deep chain one linear map).
CANDIDATE_ACTIVATIONS = tuple(a for a in RUNNABLE_ACTIVATIONS if a != "none")


@dataclass(frozen=True)
class InferredProbes:
    """The candidate kept: its probes (shaped for the network), the hidden activation it ran with (``""`` when the
    spec named one) and its score (nats of mutual information between probe and predicted class)."""

    probes: ProbeSet
    activation: str
    score: float


def prediction_information(logits: Tensor) -> float:
    """Mutual information (nats) between probe and predicted class for ``[P, C]`` output logits: ``H(mean p) -
    mean H(p)``, ``p`` their softmax (a sigmoid for one logit); between 0 and ``log C``."""
    logits = logits.double().reshape(len(logits), -1)
    if logits.shape[1] == 1:
        logits = torch.cat([logits, torch.zeros_like(logits)], dim=1)
    log_p = torch.log_softmax(logits, dim=1)
    p = log_p.exp()
    mean_p = p.mean(0)
    marginal = -(mean_p * torch.log(mean_p.clamp_min(1e-300))).sum()
    return float(marginal + (p * log_p).sum(1).mean())


def infer_probes(
    spec_for: Callable[[str], ArchSpec],
    tensors: Mapping[str, Tensor],
    input_shape: tuple[int, ...],
    catalogue: ProbeCatalogue,
    activations: Sequence[str] = ("",),
) -> InferredProbes | None:
    """The candidate of ``catalogue`` (and of ``activations``; ``spec_for(activation)`` is the network's spec with
    that hidden activation, ``""`` keeping its own) with the most :func:`prediction_information`; ``None`` when the
    catalogue knows no probes of the network's input size or none of them runs (or all score 0)."""
    candidates = catalogue(math.prod(input_shape))
    best: InferredProbes | None = None
    for activation in activations:
        try:
            spec = spec_for(activation)
        except SpecError:
            continue
        for candidate in candidates:
            inputs = candidate.inputs.reshape(len(candidate.inputs), *input_shape)
            try:
                with torch.no_grad():
                    score = prediction_information(forward(spec, tensors, inputs))
            except (SpecError, RuntimeError, ValueError):
                continue
            if math.isfinite(score) and score > (best.score if best else 0.0):
                note = f"{INFERRED} {activation}" if activation else INFERRED
                best = InferredProbes(ProbeSet(inputs, candidate.source + note), activation, score)
    return best
