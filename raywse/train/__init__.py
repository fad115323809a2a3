"""raywse.train: DDP contrastive training of the encoder on Ray Train (the driver and its worker)."""
