"""Trained adapters on disk, as every reader (eval, predict, generate, merge, combine, serve) sees them.

A run folder holds `adapter/` (LoRA) or `model/` (full fine-tuning). Next to the PEFT files
lorakit writes `lorakit.json`: what is needed beyond them — the task, the base model's portable
name, label names, max_length, and whether the base was quantized during training.
`read_adapter_artifact` reads all of that without loading a model (any plain PEFT LoRA folder
works too); `load_adapted_model` rebuilds the model the adapter was trained on, adapter included.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.lora import LoraConfig, load_adapter, read_adapter
from lorakit.lora.io import CONFIG_NAME
from lorakit.models import load_classifier, load_model, resolve_model
from lorakit.models.loading import infer_task_type, load_config

MODEL_INFO = "lorakit.json"


def artifact_folder(path: Path) -> Path:
    """`path` itself, or its `adapter/` / `model/` child when `path` is a run folder."""
    if not path.exists():
        raise LorakitError(f"{path} does not exist; pass a run folder or an adapter folder")
    for child in ("adapter", "model"):
        if (path / child).is_dir() and not (path / "adapter_config.json").exists():
            return path / child
    return path


def artifact_task(path: Path) -> str:
    """ "classification", "causal-lm" or "seq2seq": what the adapter or model at `path` does."""
    folder = artifact_folder(path)
    if (folder / CONFIG_NAME).is_file():
        task_type = read_adapter_artifact(folder).task_type
        return {v: k for k, v in TASK_TYPES.items()}.get(task_type, "classification")
    info = read_model_info(folder)
    if info.get("task"):
        return str(info["task"])
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    architectures = " ".join(config.get("architectures") or [])
    if config.get("is_encoder_decoder"):
        return "seq2seq"
    return "causal-lm" if "CausalLM" in architectures or "LMHeadModel" in architectures else "classification"


def read_model_info(folder: Path) -> dict[str, Any]:
    """The folder's lorakit.json, or {} for adapters and models lorakit did not train."""
    file = folder / MODEL_INFO
    if not file.is_file():
        return {}
    try:
        info = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise LorakitError(f"{file} is not valid JSON ({error.msg}); restore it or delete it") from None
    return info if isinstance(info, dict) else {}


# lorakit.json's task names → PEFT task types.
TASK_TYPES = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
# Heads whose first dimension is the number of labels.
_LABELLED_HEADS = ("classifier.weight", "score.weight")


@dataclass(frozen=True)
class AdapterArtifact:
    """One adapter folder and the facts needed to rebuild the model it was trained on."""

    folder: Path
    config: LoraConfig
    info: dict[str, Any]  # lorakit.json as written ({} for a plain PEFT adapter)
    task_type: str  # PEFT task type: SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM, ...
    base_model: str  # as written: a packaged name, Hub id or local path
    label_names: list[str] | None  # classification only
    num_labels: int | None  # rows of the saved head, when there is one
    quantize: str | None  # "nf4" / "bnb-nf4": the base was quantized while the adapter trained

    def model_info(self) -> dict[str, Any]:
        """lorakit.json for something derived from this adapter: its own, with the facts filled in."""
        task = {v: k for k, v in TASK_TYPES.items()}.get(self.task_type)
        info = {**self.info, "task": task or self.info.get("task"), "base_model": self.base_model}
        if self.label_names is not None:
            info["label_names"] = list(self.label_names)
        info["quantize"] = self.quantize
        return info

    def base_folder(self) -> Path | None:
        """The base model's local folder, when it has one (not a Hub id)."""
        location = Path(resolve_model(self.base_model))
        return location if location.is_dir() else None


def read_adapter_artifact(path: str | Path) -> AdapterArtifact:
    """Find and read the adapter in `path` without loading any model.

    Raises:
        LorakitError: nothing at `path`, a full-model folder (nothing to merge), an invalid
            adapter, no base model named, an unknown task or quantization in lorakit.json.
    """
    folder = artifact_folder(Path(path).expanduser())
    info = read_model_info(folder)
    if not (folder / CONFIG_NAME).is_file():
        if info.get("method") == "full" or (folder / "config.json").is_file():
            raise LorakitError(
                f"{folder} holds a full model (config.json{', lorakit train --method full' if info else ''}), "
                "not an adapter: it already loads with transformers as it is, there is nothing to merge"
            )
        raise LorakitError(f"{path} holds no {CONFIG_NAME}: pass a run folder or a PEFT/lorakit adapter folder")
    config, tensors = read_adapter(folder)
    base = info.get("base_model") or config.base_model_name_or_path
    if not base:
        raise LorakitError(
            f"{folder} names no base model (base_model in lorakit.json or base_model_name_or_path in {CONFIG_NAME})"
        )
    task = info.get("task")
    if task is not None and task not in TASK_TYPES:
        raise LorakitError(f"{folder}/lorakit.json has task {task!r}; expected one of {', '.join(TASK_TYPES)}")
    task_type = TASK_TYPES[task] if task else config.task_type or infer_task_type(load_config(base))
    quantize = info.get("quantize")
    if quantize is not None:
        from lorakit.quant import QUANT_METHODS  # torchao loads only for QLoRA adapters

        if quantize not in QUANT_METHODS:
            raise LorakitError(
                f"{folder}/lorakit.json has quantize {quantize!r}; expected one of {', '.join(QUANT_METHODS)} or null"
            )
    heads = [t for k, t in tensors.items() if k.endswith(_LABELLED_HEADS)]
    num_labels = heads[0].shape[0] if heads else None
    label_names = info.get("label_names")
    if task_type == "SEQ_CLS" and label_names is None and num_labels is not None:
        label_names = [f"LABEL_{i}" for i in range(num_labels)]
    if label_names is not None and num_labels is not None and len(label_names) != num_labels:
        raise LorakitError(
            f"{folder}/lorakit.json lists {len(label_names)} label names but the saved head has {num_labels} outputs"
        )
    return AdapterArtifact(
        folder=folder,
        config=config,
        info=info,
        task_type=task_type,
        base_model=str(base),
        label_names=list(label_names) if label_names is not None else None,
        num_labels=num_labels,
        quantize=quantize,
    )


def load_base_model(artifact: AdapterArtifact) -> nn.Module:
    """The adapter's base model in fp32, with the head its task needs and no adapter yet."""
    if artifact.task_type == "SEQ_CLS" and artifact.label_names is not None:
        return load_classifier(artifact.base_model, artifact.label_names)
    return load_model(artifact.base_model, artifact.task_type, artifact.num_labels, dtype=torch.float32)


def load_adapted_model(artifact: AdapterArtifact) -> nn.Module:
    """The base with its head, quantized again when the adapter was trained on a 4-bit base (the
    adapter learnt to correct those weights), with the adapter loaded and active."""
    model = load_base_model(artifact)
    if artifact.quantize:
        from lorakit.quant import quantize_model

        quantize_model(model, artifact.quantize)
    return load_adapter(model, artifact.folder)
