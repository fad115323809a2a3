"""raywse.eval: the evaluation report of a trained encoder against the baselines.

``config`` (:class:`EvalConfig`, embedder and split names), ``view`` (per-model labels of the evaluated models),
``suite`` (retrieval metrics), ``probes`` (accuracy prediction and embedding structure), ``finetune`` (fine-tuning
steps saved), ``plots`` (figures), ``render`` (the Markdown report) and ``report`` (:func:`evaluate`,
:func:`recompute_metrics`).
"""
