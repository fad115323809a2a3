"""raywse.data: the graphify stage (Ray Data: checkpoints → graph shards), zoo splits and training labels."""
