"""raywse.graph: checkpoints as neural graphs.

``neural_graph`` (spec + tensors → PyG ``Data``, batch-norm folding), ``infer`` (specs for foreign checkpoints),
``symmetry`` (function-preserving permutations / rescalings), ``arrow`` (graphs as Arrow rows), ``chain`` (shared
walk over a spec's linear/conv layers).
"""
