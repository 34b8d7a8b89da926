"""Running an experiment: configuration, the training loop, logging, checkpoints."""
