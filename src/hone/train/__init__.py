"""Training: the loop, its loss, checkpoints and logging."""
