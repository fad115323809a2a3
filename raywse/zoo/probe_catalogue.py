"""The zoo's probe rows as the catalogue of probe inference (:mod:`raywse.graph.probe_inference`).

A checkpoint written by other code reads its inputs in a normalisation nobody stated. For each dataset of the zoo
the catalogue holds its probe rows (:func:`~raywse.zoo.datasets.stored_probe_inputs`, the train split's) under the
zoo's own input normalisations and the common ones other code uses; the network is run on those of its input size and
the one it answers most informatively is kept. Every candidate's source names the dataset's rows
(``train:digits|signed``), so the network's responses are compared with those of the zoo's models of that dataset.

Images (pixels in [0, 1] as stored): ``unit`` as stored (torchvision's ``ToTensor``), ``signed`` scaled to [-1, 1]
(``Normalize(0.5, 0.5)``), ``standard`` the zoo's per-pixel standardisation. Other inputs: ``unit`` the zoo's min-max
scaling to [-1, 1], ``minmax`` to [0, 1] (scikit-learn's ``MinMaxScaler``), ``maxabs`` divided by the largest absolute
train value (``MaxAbsScaler``), ``standard`` the zoo's standardisation. Statistics are the train split's.
"""

from __future__ import annotations

import functools

from raywse.graph.probes import NORM_SEPARATOR, ZOO_ROWS_PREFIX, ProbeSet
from raywse.zoo.datasets import STORED_UNITS, probe_inputs

#: The flat input size of each dataset's networks (checked against the data by a test), so that a query loads only
#: the datasets of its own size.
INPUT_SIZES = {"digits": 64, "mnist14": 196, "mnist1d": 40, "iris": 4, "wine": 13, "breast_cancer": 30}
#: Datasets whose inputs are images (pixels in [0, 1] as stored).
IMAGE_DATASETS = ("digits", "mnist14")


#: The normalisations tried, per kind of input: the zoo's own first (:func:`~raywse.zoo.datasets.probe_inputs`).
IMAGE_NORMS = ("unit", "standard", "signed")
OTHER_NORMS = ("unit", "standard", "minmax", "maxabs")


@functools.cache
def zoo_catalogue(size: int) -> tuple[ProbeSet, ...]:
    """The zoo's probe sets of flat input size ``size`` under every normalisation above (none for another size)."""
    out = []
    for dataset in (d for d in STORED_UNITS if INPUT_SIZES[d] == size):
        for norm in IMAGE_NORMS if dataset in IMAGE_DATASETS else OTHER_NORMS:
            inputs = probe_inputs(dataset, norm).reshape(-1, size)  # cached on disk: no dataset loaded after once
            out.append(ProbeSet(inputs, f"{ZOO_ROWS_PREFIX}{dataset}{NORM_SEPARATOR}{norm}"))
    return tuple(out)
