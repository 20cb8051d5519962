"""`lorakit inspect MODEL`: what LoRA would touch in a model, before training it.

Lists the Linear layers grouped by name pattern (layer numbers folded to `*`) with their shapes,
marks which ones a target spec hits and which are trained in full (the head), and prints the
trainable-parameter count in PEFT's wording.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

from torch import nn

from lorakit.cli.args import add_lora_arguments
from lorakit.lora import LoraConfig, add_adapter, format_trainable_parameters
from lorakit.lora.layer import LoraLinear, ModulesToSave, linear_features
from lorakit.lora.targets import LINEAR_TYPES
from lorakit.models import MODEL_CLASSES, load_model
from lorakit.models.loading import infer_task_type, load_config
from lorakit.task_kind import TaskKind


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "inspect",
        help="list a model's Linear layers and what a LoRA config would train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model",
        nargs="?",
        default=TaskKind.CLASSIFICATION.default_model,
        help=f"packaged model name, local folder or Hub id (default {TaskKind.CLASSIFICATION.default_model})",
    )
    parser.add_argument("--task", choices=("auto", *MODEL_CLASSES), default="auto", help="which head to load")
    parser.add_argument("--num-labels", type=int, default=2, help="classes, for classification heads (default 2)")
    add_lora_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    task = infer_task_type(load_config(args.model)) if args.task == "auto" else args.task
    model = load_model(args.model, task_type=task, num_labels=args.num_labels)
    groups = linear_groups(model)
    config = LoraConfig(
        r=args.r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.target_modules,
        exclude_modules=args.exclude_modules,
        layers_to_transform=args.layers_to_transform,
        use_rslora=args.use_rslora,
        bias=args.bias,
        task_type=task,
    )
    total_before = sum(p.numel() for p in model.parameters())
    add_adapter(model, config)
    roles = module_roles(model)
    print(f"{args.model}: {type(model).__name__}, task {task}, {total_before:,} parameters")
    print()
    width = max(len(pattern) for pattern in groups)
    print(f"  {'Linear layers':<{width}}  {'count':>5}  {'in → out':<14}  LoRA")
    for pattern, members in groups.items():
        shapes = sorted({shape for _, shape in members})
        shape_text = ", ".join(f"{i} → {o}" for i, o in shapes)
        marks = {roles.get(name, "") for name, _ in members} - {""}
        print(f"  {pattern:<{width}}  {len(members):>5}  {shape_text:<14}  {', '.join(sorted(marks))}")
    print()
    lora_count = sum(p.numel() for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name)
    targeted = sum(1 for role in roles.values() if role == "lora")
    print(f"LoRA r={config.r}, lora_alpha={config.lora_alpha:g} on {targeted} layers: {lora_count:,} LoRA parameters")
    print(format_trainable_parameters(model))
    return 0


def linear_groups(model: nn.Module) -> dict[str, list[tuple[str, tuple[int, int]]]]:
    """Linear/Conv1D layers keyed by name pattern (`layer.3.` → `layer.*.`), with (in, out) shapes."""
    groups: dict[str, list[tuple[str, tuple[int, int]]]] = defaultdict(list)
    for name, module in model.named_modules():
        if isinstance(module, LINEAR_TYPES):
            groups[re.sub(r"\.\d+\.", ".*.", name)].append((name, linear_features(module)))
    return dict(groups)


def module_roles(model: nn.Module) -> dict[str, str]:
    """Original layer name → "lora" (gets an adapter) or "trained in full" (a module to save)."""
    roles = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            roles[name] = "lora"
        elif isinstance(module, ModulesToSave):
            for inner, child in module.original_module.named_modules():
                if isinstance(child, LINEAR_TYPES):
                    roles[f"{name}.{inner}" if inner else name] = "trained in full"
    return roles
