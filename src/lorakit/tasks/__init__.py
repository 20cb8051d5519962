"""Per-task pieces: the model head, the loss, metrics and prediction."""
