"""Host-only model code (torch): architectures, checkpoints, the stage split, training."""
