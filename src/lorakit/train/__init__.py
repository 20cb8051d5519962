"""Training: config, loop (on accelerate), checkpoints, optimiser, run outputs."""
