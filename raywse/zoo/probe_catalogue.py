"""The zoo's probe rows as the catalogue of probe inference (:mod:`raywse.graph.probe_inference`).

A checkpoint written by other code reads its inputs in a normalisation nobody stated. For each dataset of the zoo
the catalogue holds its probe rows (:func:`~raywse.zoo.datasets.stored_probe_inputs`, the train split's) under the
zoo's own input normalisations and the common ones other code uses; the network is run on those of its input size and
the one it answers most informatively is kept. Every candidate's source names the dataset's rows
(``train:digits|signed``), so the network's responses are compared with those of the zoo's models of that dataset.

Images (pixels in [0, 1] as stored): ``unit`` as stored (torchvision's ``ToTensor``), ``signed`` scaled to [-1, 1]
(``Normalize(0.5, 0.5)``), ``standard`` the zoo's per-pixel standardisation, ``global`` one mean and std over all
pixels (MNIST's customary ``Normalize(0.1307, 0.3081)``); besides the zoo's datasets, mnist14's probe images at
MNIST's own 28x28 (:data:`SAME_ROWS`). Other inputs: ``unit`` the zoo's min-max
scaling to [-1, 1], ``minmax`` to [0, 1] (scikit-learn's ``MinMaxScaler``), ``maxabs`` divided by the largest absolute
train value (``MaxAbsScaler``), ``standard`` the zoo's standardisation. Statistics are the train split's.
"""

from __future__ import annotations

import functools

from raywse.graph.probes import NORM_SEPARATOR, ZOO_ROWS_PREFIX, ProbeSet
from raywse.zoo.datasets import probe_inputs

#: The flat input size of each dataset's networks (checked against the data by a test), so that a query loads only
#: the datasets of its own size.
INPUT_SIZES = {"digits": 64, "mnist14": 196, "mnist1d": 40, "iris": 4, "wine": 13, "breast_cancer": 30, "mnist28": 784}
#: Datasets whose inputs are images (pixels in [0, 1] as stored).
IMAGE_DATASETS = ("digits", "mnist14", "mnist28")
#: Probe sets that are another dataset's rows at another size: ``mnist28`` holds mnist14's probe images at MNIST's
#: own 28x28, so a 28x28 MNIST network's responses are compared with the zoo's mnist14 models' (same images, same
#: classes).
SAME_ROWS = {"mnist28": "mnist14"}


#: The normalisations tried, per kind of input: the zoo's own first (:func:`~raywse.zoo.datasets.probe_inputs`).
IMAGE_NORMS = ("unit", "standard", "signed", "global")
OTHER_NORMS = ("unit", "standard", "minmax", "maxabs")


@functools.cache
def zoo_catalogue(size: int) -> tuple[ProbeSet, ...]:
    """The zoo's probe sets of flat input size ``size`` under every normalisation above (none for another size)."""
    out = []
    for dataset in (d for d, n in INPUT_SIZES.items() if n == size):
        rows, note = SAME_ROWS.get(dataset, dataset), f" {dataset}" if dataset in SAME_ROWS else ""
        for norm in IMAGE_NORMS if dataset in IMAGE_DATASETS else OTHER_NORMS:
            inputs = probe_inputs(dataset, norm).reshape(-1, size)  # cached on disk: no dataset loaded after once
            out.append(ProbeSet(inputs, f"{ZOO_ROWS_PREFIX}{rows}{NORM_SEPARATOR}{norm}{note}"))
    return tuple(out)
