"""raywse.tune: Ray Tune (ASHA) sweeps over the contrastive training loop."""
