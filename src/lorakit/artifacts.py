"""The on-disk format of what lorakit trains: run folders, adapter and model folders, `lorakit.json`.

    runs/reviews-lora/                 a run folder (`lorakit train`)
      adapter/                         LoRA: the PEFT adapter (`model/` for full fine-tuning)
        adapter_config.json            PEFT
        adapter_model.safetensors      PEFT
        lorakit.json                   `ArtifactInfo`: what PEFT's files do not say

`lorakit.json` holds the task, the base model's portable name, label names, max_length, whether
the base was quantized while the adapter trained, and the generation settings of the run. This
module is its one reader and writer, with a versioned schema: version 1 is the unversioned file
of lorakit 0.1, read as is; a newer version than this lorakit knows is refused.

`find_artifact_folder` finds the adapter or model in a run folder; `save_artifact` writes one
atomically; `read_adapter_artifact` reads an adapter folder (any plain PEFT LoRA folder too)
without loading a model, and `load_adapted_model` rebuilds the model it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.folders import staged_folder, write_text
from lorakit.jsontext import loads
from lorakit.lora import LoraConfig, load_adapter, read_adapter, save_adapter
from lorakit.lora.io import CONFIG_NAME
from lorakit.models import load_classifier, load_model, resolve_model
from lorakit.models.loading import infer_task_type, load_config
from lorakit.task_kind import TaskKind

ARTIFACT_INFO_FILE = "lorakit.json"
FORMAT_VERSION = 2
ADAPTER_DIR = "adapter"  # a run's LoRA adapter
MODEL_DIR = "model"  # a run's fully fine-tuned model
# Heads whose first dimension is the number of labels.
_LABELLED_HEADS = ("classifier.weight", "score.weight")


@dataclass(frozen=True)
class ArtifactInfo:
    """`lorakit.json`: the facts eval, predict, generate, merge, combine and serve need beyond the
    PEFT (or transformers) files. Every field is optional: a plain PEFT folder has none."""

    task: TaskKind | None = None
    method: str | None = None  # "lora", "full", or "merged" (`lorakit merge`)
    base_model: str | None = None  # portable: a packaged model's Hub id, an absolute path, a Hub id
    max_length: int | None = None  # tokens per training example
    quantize: str | None = None  # "nf4" / "bnb-nf4": the base was 4-bit while the adapter trained
    label_names: tuple[str, ...] | None = None  # classification, in head order
    text_pair: bool = False  # classification of text pairs
    system_prompt: str | None = None  # generation: the run's system message
    max_new_tokens: int | None = None  # generation: tokens per sample
    max_target_length: int | None = None  # seq2seq: response tokens
    merged_from: str | None = None  # `lorakit merge`: the adapter folder
    merged_onto: str | None = None  # `lorakit merge` of a QLoRA adapter: the weights it was merged onto
    combined: dict[str, Any] | None = None  # `lorakit combine`: method, weights, adapters (, svd_rank)
    version: int = FORMAT_VERSION

    def replace(self, **changes: Any) -> ArtifactInfo:
        """A copy with `changes` applied, written in the current format."""
        return dataclasses.replace(self, **changes, version=FORMAT_VERSION)

    def to_json(self) -> str:
        """The file's text: every field, lists for tuples, the task by name."""
        data = dataclasses.asdict(self)
        data["task"] = self.task.value if self.task is not None else None
        data["label_names"] = list(self.label_names) if self.label_names is not None else None
        return json.dumps({"version": data.pop("version"), **data}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = ARTIFACT_INFO_FILE) -> ArtifactInfo:
        """Parse and check a file's text (`source` names it in errors).

        Raises:
            LorakitError: not JSON, not an object, a newer format version, an unknown field, or a
                field of the wrong type.
        """
        try:
            data = loads(text)
        except json.JSONDecodeError as error:
            raise LorakitError(f"{source} is not valid JSON ({error.msg}); restore it or delete it") from None
        if not isinstance(data, dict):
            raise LorakitError(
                f"{source} must hold a JSON object, not a {type(data).__name__}; restore it or delete it"
            )
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = ARTIFACT_INFO_FILE) -> ArtifactInfo:
        """Check a parsed file against the schema of its version (see `from_json`)."""
        data = dict(data)
        version = data.pop("version", 1)  # lorakit 0.1 wrote no version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise LorakitError(f"{source} has version {version!r}; expected a whole number from 1 to {FORMAT_VERSION}")
        if version > FORMAT_VERSION:
            raise LorakitError(
                f"{source} has format version {version}, newer than this lorakit reads ({FORMAT_VERSION}); "
                "upgrade lorakit to use this folder"
            )
        known = {field.name for field in dataclasses.fields(cls)} - {"version"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LorakitError(f"{source} has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name, value in data.items():
            _check_field(name, value, source)
        if data.get("task") is not None:
            data["task"] = TaskKind.parse(data["task"], f"{source} task")
        if data.get("label_names") is not None:
            data["label_names"] = tuple(data["label_names"])
        if data.get("quantize") is not None:
            from lorakit.quant import QUANT_METHODS  # torchao loads only for QLoRA adapters

            if data["quantize"] not in QUANT_METHODS:
                raise LorakitError(
                    f"{source} has quantize {data['quantize']!r}; expected one of {', '.join(QUANT_METHODS)} or null"
                )
        return cls(**data, version=version)


# Field → the JSON types it may hold (None is allowed for every field but text_pair).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "method": (str,),
    "base_model": (str,),
    "max_length": (int,),
    "quantize": (str,),
    "label_names": (list,),
    "text_pair": (bool,),
    "system_prompt": (str,),
    "max_new_tokens": (int,),
    "max_target_length": (int,),
    "merged_from": (str,),
    "merged_onto": (str,),
    "combined": (dict,),
}


def _check_field(name: str, value: Any, source: str) -> None:
    if value is None and name != "text_pair":
        return
    types = _FIELD_TYPES[name]
    wrong_bool = isinstance(value, bool) and bool not in types
    if wrong_bool or not isinstance(value, types):
        kind = " or ".join("a whole number" if t is int else t.__name__ for t in types)
        raise LorakitError(f"{source} field {name} must be {kind}, got {value!r}")
    if name == "label_names" and not all(isinstance(label, str) for label in value):
        raise LorakitError(f"{source} field label_names must be a list of strings, got {value!r}")


def find_artifact_folder(path: Path) -> Path:
    """What `path` holds: `path` itself, or its `adapter/` / `model/` child when it is a run folder.

    Raises:
        LorakitError: nothing exists at `path`.
    """
    if not path.exists():
        raise LorakitError(f"{path} does not exist; pass a run folder or an adapter folder")
    for child in (ADAPTER_DIR, MODEL_DIR):
        if (path / child).is_dir() and not (path / CONFIG_NAME).exists():
            return path / child
    return path


def run_artifact_folder(run_dir: Path, method: str) -> Path:
    """Where a run trained with `method` ("lora" or "full") keeps its adapter or model."""
    return run_dir / (ADAPTER_DIR if method == "lora" else MODEL_DIR)


def read_artifact_info(folder: Path) -> ArtifactInfo:
    """The folder's lorakit.json, or an empty `ArtifactInfo` where lorakit did not write one."""
    file = folder / ARTIFACT_INFO_FILE
    if not file.is_file():
        return ArtifactInfo()
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise LorakitError(f"{file} is not UTF-8 JSON text; restore it or delete it") from None
    return ArtifactInfo.from_json(text, str(file))


def write_artifact_info(folder: Path, info: ArtifactInfo) -> None:
    """Write `info` as the folder's lorakit.json (atomically: `lorakit.folders.write_text`)."""
    write_text(folder / ARTIFACT_INFO_FILE, info.to_json())


def save_artifact(
    folder: Path, model: nn.Module, info: ArtifactInfo, tokenizer: Any = None, adapter: dict | None = None
) -> None:
    """Replace `folder` atomically with `model`'s active adapter (PEFT format; `info.method` "lora";
    `adapter`: its tensors, gathered already from a sharded model) or the whole model and
    `tokenizer` (transformers format), plus lorakit.json."""
    with staged_folder(folder) as staging:
        if info.method == "lora":
            save_adapter(model, staging, tensors=adapter)
        else:
            model.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
        write_artifact_info(staging, info)


def artifact_kind(path: Path) -> TaskKind:
    """What the adapter or model at `path` (or in the run folder `path`) does."""
    folder = find_artifact_folder(path)
    if (folder / CONFIG_NAME).is_file():
        kind = TaskKind.from_peft_type(read_adapter_artifact(folder).task_type)
        return kind or TaskKind.CLASSIFICATION
    info = read_artifact_info(folder)
    if info.task is not None:
        return info.task
    config = _model_config(folder)
    architectures = " ".join(map(str, config.get("architectures") or []))
    if config.get("is_encoder_decoder"):
        return TaskKind.SEQ2SEQ
    if "CausalLM" in architectures or "LMHeadModel" in architectures:
        return TaskKind.CAUSAL_LM
    return TaskKind.CLASSIFICATION


def _model_config(folder: Path) -> dict[str, Any]:
    """A full model folder's config.json ({} without one).

    Raises:
        LorakitError: the file is not a JSON object.
    """
    file = folder / "config.json"
    if not file.is_file():
        return {}
    try:
        config = loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        raise LorakitError(f"{file} is not valid JSON ({reason}); restore the model folder") from None
    if not isinstance(config, dict) or not isinstance(config.get("architectures") or [], list):
        raise LorakitError(f"{file} is not a transformers model config (a JSON object); restore the model folder")
    return config


@dataclass(frozen=True)
class AdapterArtifact:
    """One adapter folder and the facts needed to rebuild the model it was trained on."""

    folder: Path
    config: LoraConfig
    info: ArtifactInfo  # lorakit.json as written (empty for a plain PEFT adapter)
    task_type: str  # PEFT task type: SEQ_CLS, CAUSAL_LM, SEQ_2_SEQ_LM, ...
    base_model: str  # as written: a packaged name, Hub id or local path
    label_names: list[str] | None  # classification only
    num_labels: int | None  # rows of the saved head, when there is one
    quantize: str | None  # "nf4" / "bnb-nf4": the base was quantized while the adapter trained

    @property
    def kind(self) -> TaskKind | None:
        """The task kind of the adapter; None for PEFT task types lorakit does not train."""
        return TaskKind.from_peft_type(self.task_type)

    def derived_info(self) -> ArtifactInfo:
        """lorakit.json for something made from this adapter: its own, with the facts filled in."""
        labels = tuple(self.label_names) if self.label_names is not None else self.info.label_names
        return self.info.replace(
            task=self.kind or self.info.task, base_model=self.base_model, label_names=labels, quantize=self.quantize
        )

    def base_folder(self) -> Path | None:
        """The base model's local folder, when it has one (not a Hub id)."""
        location = Path(resolve_model(self.base_model))
        return location if location.is_dir() else None


def read_adapter_artifact(path: str | Path) -> AdapterArtifact:
    """Find and read the adapter in `path` without loading any model.

    Raises:
        LorakitError: nothing at `path`, a full-model folder (nothing to merge), an invalid
            adapter, no base model named, a lorakit.json that does not fit the saved head.
    """
    folder = find_artifact_folder(Path(path).expanduser())
    info = read_artifact_info(folder)
    if not (folder / CONFIG_NAME).is_file():
        if info.method == "full" or (folder / "config.json").is_file():
            wrote = ", lorakit train --method full" if info != ArtifactInfo() else ""
            raise LorakitError(
                f"{folder} holds a full model (config.json{wrote}), "
                "not an adapter: it already loads with transformers as it is, there is nothing to merge"
            )
        raise LorakitError(f"{path} holds no {CONFIG_NAME}: pass a run folder or a PEFT/lorakit adapter folder")
    config, tensors = read_adapter(folder)
    base = info.base_model or config.base_model_name_or_path
    if not base:
        raise LorakitError(
            f"{folder} names no base model (base_model in lorakit.json or base_model_name_or_path in {CONFIG_NAME})"
        )
    task_type = info.task.peft_type if info.task else config.task_type or infer_task_type(load_config(base))
    heads = [(k, t) for k, t in tensors.items() if k.endswith(_LABELLED_HEADS)]
    if heads and heads[0][1].ndim != 2:
        key, head = heads[0]
        raise LorakitError(
            f"{folder}: the head weight {key} is {tuple(head.shape)}, not a matrix (labels × hidden size): "
            "the adapter file is damaged"
        )
    num_labels = heads[0][1].shape[0] if heads else None
    label_names = list(info.label_names) if info.label_names is not None else None
    if task_type == TaskKind.CLASSIFICATION.peft_type and label_names is None and num_labels is not None:
        label_names = [f"LABEL_{i}" for i in range(num_labels)]
    if label_names is not None and num_labels is not None and len(label_names) != num_labels:
        raise LorakitError(
            f"{folder}/{ARTIFACT_INFO_FILE} lists {len(label_names)} label names "
            f"but the saved head has {num_labels} outputs"
        )
    return AdapterArtifact(
        folder=folder,
        config=config,
        info=info,
        task_type=task_type,
        base_model=str(base),
        label_names=label_names,
        num_labels=num_labels,
        quantize=info.quantize,
    )


def load_base_model(artifact: AdapterArtifact) -> nn.Module:
    """The adapter's base model in fp32, with the head its task needs and no adapter yet."""
    if artifact.kind is TaskKind.CLASSIFICATION and artifact.label_names is not None:
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
