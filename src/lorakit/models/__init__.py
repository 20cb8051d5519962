"""Finding and loading base models: packaged offline models by name, local folders, Hub ids."""

from lorakit.models.loading import MODEL_CLASSES, infer_task_type, load_classifier, load_model
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
    "resolve_model",
]
