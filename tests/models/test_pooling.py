"""The readout's confidence statistics on hand-made responses."""

from __future__ import annotations

import math

import torch

from raywse.models.pooling import CONFIDENCE_STATS, confidence_statistics


def test_confidence_statistics_of_sure_uncertain_and_unprobed_networks():
    """A network sure of every probe, one uniform over its 4 classes (of 10 slots), one never probed (zeros)."""
    classes, probes = 10, 8
    sure = torch.zeros(probes, classes)
    sure[torch.arange(probes), torch.arange(probes) % 3] = 1.0
    uniform = torch.zeros(probes, classes)
    uniform[:, :4] = 0.25
    responses = torch.stack([sure, uniform, torch.zeros(probes, classes)]).flatten(1)
    stats = confidence_statistics(responses, classes)
    assert stats.shape == (3, CONFIDENCE_STATS)
    torch.testing.assert_close(stats[0], torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(stats[1], torch.tensor([0.25, 0.0, 0.0, math.log(4) / math.log(10), 0.0, 0.0]))
    assert not stats[2].any()


def test_confidence_statistics_vary_with_the_probes():
    """Half the probes sure, half split 0.6 / 0.4: means and spreads over the probes."""
    classes = 2
    responses = torch.tensor([[1.0, 0.0], [0.6, 0.4]]).repeat(2, 1).reshape(1, -1)
    stats = confidence_statistics(responses, classes)[0]
    entropy = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4)) / math.log(2)
    expected = [0.8, 0.2, 0.6, entropy / 2, entropy / 2, 0.5]
    torch.testing.assert_close(stats, torch.tensor(expected), rtol=1e-5, atol=1e-6)
