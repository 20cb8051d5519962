"""Finding and loading base models: packaged offline models by name, local folders, GGUF files, Hub ids."""

from lorakit.models.loading import MODEL_CLASSES, infer_task_type, load_classifier, load_model, load_tokenizer
from lorakit.models.packaged import (
    PACKAGED_MODELS,
    resolve_model,
)

__all__ = [
    "MODEL_CLASSES",
    "PACKAGED_MODELS",
    "infer_task_type",
    "load_classifier",
    "load_model",
    "load_tokenizer",
    "resolve_model",
]
