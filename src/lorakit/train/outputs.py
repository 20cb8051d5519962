"""What a run leaves in its folder.

config.yaml         the resolved config (written at the start; --resume reads it)
adapter/            the best adapter in the PEFT format (with the head for classification) + lorakit.json
model/              (--method full) the best full model, loadable by transformers
metrics.json        test metrics and run facts
history.json        train loss per logged step, validation results per evaluation
plots/*.png         loss curves, the validation metric, the confusion matrix (classification)
generations.json    (generation tasks) held-out prompts, references, generations before/after training
report.html         one self-contained page with all of the above
checkpoints/        resumable checkpoints and the best trainable weights
.lorakit.lock       held (flock) while `lorakit train` runs here: one run per folder

The adapter/model folder and its lorakit.json are written by `lorakit.artifacts`, the one owner of
that format; this module decides what goes in them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lorakit.artifacts import ArtifactInfo, run_artifact_folder, save_artifact
from lorakit.folders import refused_writes, staged_files, write_text
from lorakit.lora.io import adapter_state_dict
from lorakit.models import PACKAGED_MODELS
from lorakit.train.config import TrainConfig
from lorakit.train.sharding import gather_trainable, is_sharded, load_trainable

BEST_WEIGHTS = "checkpoints/best.safetensors"


def portable_model_name(name: str) -> str:
    """The name another machine can load the base by: a packaged model's Hub id, a local path
    made absolute, else the name as given."""
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name].aliases[0]
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def artifact_info(config: TrainConfig, task_facts: dict[str, Any]) -> ArtifactInfo:
    """lorakit.json for this run: the run's facts and the task's (`Task.artifact_facts`)."""
    return ArtifactInfo(
        task=config.task,
        method=config.method,
        base_model=portable_model_name(config.model),
        max_length=config.max_length,
        quantize=config.quantize,
        **task_facts,
    )


def save_model(model: nn.Module, run_dir: Path, info: ArtifactInfo, tokenizer: Any, main: bool = True) -> None:
    """Replace the run's adapter (or full model) with the current weights, atomically, and keep
    the trainable weights as the best so far (`restore_best` puts them back). A sharded model's
    tensors are gathered first, so every rank calls this and only `main` writes."""
    sharded = is_sharded(model)
    adapter = adapter_state_dict(model) if sharded and info.method == "lora" else None
    trainable = gather_trainable(model, main)
    if not main:
        return
    save_artifact(run_artifact_folder(run_dir, info.method), model, info, tokenizer, adapter=adapter)
    with staged_files(run_dir / BEST_WEIGHTS) as (best,):
        save_file(trainable, best)


def restore_best(model: nn.Module, run_dir: Path, main: bool = True) -> None:
    """Put the best trainable weights (by the task's validation metric) back into `model`; a
    sharded model takes them from the main rank's file (every rank calls this)."""
    if is_sharded(model):
        load_trainable(model, load_file(run_dir / BEST_WEIGHTS) if main else {}, main)
        return
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(run_dir / BEST_WEIGHTS).items():
            parameters[name].copy_(tensor)


def artifact_bytes(run_dir: Path, config: TrainConfig) -> int:
    """Bytes on disk of what a user ships: the adapter (or the full model) folder."""
    return sum(f.stat().st_size for f in run_artifact_folder(run_dir, config.method).rglob("*") if f.is_file())


def write_run(run_dir: Path, metrics: dict[str, Any], history: dict[str, list]) -> None:
    """metrics.json and history.json, each whole or not at all (the task writes its plots and report.html)."""
    write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text(run_dir / "history.json", json.dumps(history, indent=2) + "\n")
    with refused_writes(run_dir / "plots"):
        (run_dir / "plots").mkdir(exist_ok=True)
