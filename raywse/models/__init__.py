"""raywse.models: embedders of neural graphs, in plain PyTorch (no Ray).

``features`` (Fourier lifting, per-layer grouping), ``blocks`` (weight tensors as dense blocks), ``conv`` (the
message-passing layer, by blocks or per edge), ``pooling`` (invariant readout), ``encoder`` (the equivariant GNN and
its config), ``encode`` (the one batched embedding loop), ``checkpoint`` (export / load a trained encoder),
``losses``, ``contrastive`` (the training loop shared by Ray Train, Tune and the trained baselines), ``embedder`` (the
``Embedder`` protocol), ``baselines`` (every baseline and their registry).
"""
