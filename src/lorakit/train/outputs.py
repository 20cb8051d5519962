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
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lorakit.lora import save_adapter
from lorakit.models import PACKAGED_MODELS
from lorakit.tasks.artifacts import MODEL_INFO
from lorakit.train.config import TrainConfig

BEST_WEIGHTS = "checkpoints/best.safetensors"


def portable_model_name(name: str) -> str:
    """The name another machine can load the base by: a packaged model's Hub id, a local path
    made absolute, else the name as given."""
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name].aliases[0]
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def artifact_folder(run_dir: Path, config: TrainConfig) -> Path:
    return run_dir / ("adapter" if config.method == "lora" else "model")


def model_info(config: TrainConfig, task_info: dict[str, Any]) -> dict[str, Any]:
    """lorakit.json: the facts eval/predict/generate/merge/serve need beyond the PEFT files."""
    return {
        "task": config.task,
        "method": config.method,
        "base_model": portable_model_name(config.model),
        "max_length": config.max_length,
        "quantize": config.quantize,
        **task_info,
    }


def save_model(model: nn.Module, run_dir: Path, config: TrainConfig, info: dict[str, Any], tokenizer) -> None:
    """Replace the run's adapter (or full model) with the current weights, atomically."""
    target = artifact_folder(run_dir, config)
    staging = target.with_name(f".{target.name}.new")
    shutil.rmtree(staging, ignore_errors=True)
    if config.method == "lora":
        save_adapter(model, staging)
    else:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    (staging / MODEL_INFO).write_text(json.dumps(info, indent=2) + "\n")
    _swap_in(staging, target)
    best = run_dir / BEST_WEIGHTS
    best.parent.mkdir(parents=True, exist_ok=True)
    trainable = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, best.with_name(".best.tmp"))
    os.replace(best.with_name(".best.tmp"), best)


def restore_best(model: nn.Module, run_dir: Path) -> None:
    """Put the best trainable weights (by the task's validation metric) back into `model`."""
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(run_dir / BEST_WEIGHTS).items():
            parameters[name].copy_(tensor)


def artifact_bytes(run_dir: Path, config: TrainConfig) -> int:
    """Bytes on disk of what a user ships: the adapter (or the full model) folder."""
    return sum(f.stat().st_size for f in artifact_folder(run_dir, config).rglob("*") if f.is_file())


def write_run(run_dir: Path, metrics: dict[str, Any], history: dict[str, list]) -> None:
    """metrics.json and history.json (the task writes its plots and report.html)."""
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (run_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    (run_dir / "plots").mkdir(exist_ok=True)


def _swap_in(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
