"""Load a base model with the head its task needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PretrainedConfig,
)

from lorakit.errors import LorakitError
from lorakit.models.packaged import PACKAGED_MODELS, resolve_model

MODEL_CLASSES = {
    "SEQ_CLS": AutoModelForSequenceClassification,
    "TOKEN_CLS": AutoModelForTokenClassification,
    "QUESTION_ANS": AutoModelForQuestionAnswering,
    "CAUSAL_LM": AutoModelForCausalLM,
    "SEQ_2_SEQ_LM": AutoModelForSeq2SeqLM,
    "FEATURE_EXTRACTION": AutoModel,
}


def load_config(name_or_path: str) -> PretrainedConfig:
    """The transformers config of a packaged name, local folder or Hub id."""
    location = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as error:
        raise LorakitError(_not_loadable(name_or_path, error)) from None


def infer_task_type(config: PretrainedConfig) -> str:
    """The natural LoRA task for an architecture: generation for LMs, classification for encoders."""
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if config.is_encoder_decoder or "ForConditionalGeneration" in architectures:
        return "SEQ_2_SEQ_LM"
    if "ForCausalLM" in architectures or "LMHeadModel" in architectures:
        return "CAUSAL_LM"
    return "SEQ_CLS"


def load_model(
    name_or_path: str,
    task_type: str | None = None,
    num_labels: int | None = None,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a base model for `task_type` (inferred when None); classification gets `num_labels`.

    Raises:
        LorakitError: the name is neither a local folder, a packaged model, nor loadable from the
            Hub; the message lists the packaged names.
    """
    location = resolve_model(name_or_path)
    config = load_config(name_or_path)
    task = task_type or infer_task_type(config)
    if task not in MODEL_CLASSES:
        raise LorakitError(f"task_type must be one of {', '.join(MODEL_CLASSES)}; got {task!r}")
    kwargs: dict = {"dtype": dtype or torch.float32}
    if task in ("SEQ_CLS", "TOKEN_CLS") and num_labels is not None:
        kwargs["num_labels"] = num_labels
    try:
        return MODEL_CLASSES[task].from_pretrained(location, **kwargs)
    except (OSError, ValueError) as error:
        raise LorakitError(_not_loadable(name_or_path, error)) from None


def _not_loadable(name: str, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"cannot load model {name!r} ({reason}); pass a local model folder, a packaged model "
        f"({', '.join(PACKAGED_MODELS)}) or a Hub id reachable from this machine"
    )


def load_classifier(model_name: str, label_names: Sequence[str]) -> nn.Module:
    """The base model with a fresh `len(label_names)`-way head and the label names in its config."""
    model = load_model(model_name, task_type="SEQ_CLS", num_labels=len(label_names))
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: i for i, name in enumerate(label_names)}
    return model
