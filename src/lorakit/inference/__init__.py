"""Using trained adapters and models: classification (scores, metrics, labels) and text generation."""
