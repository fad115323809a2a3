"""raywse.graph: checkpoints as neural graphs.

``schema`` (the graph's fields and node enums), ``chain`` (a spec walked as layers of neurons), ``neural_graph``
(spec + tensors → PyG ``Data``, batch-norm folding, kernel padding), ``infer`` (specs for foreign checkpoints),
``checkpoint`` (one file → its graph, or a staged error), ``symmetry`` (function-preserving permutations and
rescalings, tensor and graph forms, and the scale canonicalisation), ``transforms`` (random views for contrastive
training), ``arrow`` (graphs as Arrow rows).
"""
