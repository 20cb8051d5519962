"""`lorakit inspect MODEL`: what LoRA would touch in a model, before training it.

Lists the Linear layers grouped by name pattern (layer numbers folded to `*`) with their shapes,
marks which ones a target spec hits and which are trained in full (the head), and prints the
trainable-parameter count in PEFT's wording. The model is built on the meta device from its
config: no weights are read, so a 70B model inspects as fast as a small one.

`--plan` adds the memory planner's estimate for training it (`lorakit train` prints the same
before it loads the model): batch × max-length tokens per micro-batch, with and without
activation checkpointing, and, with `--max-memory`, the setting `lorakit train` would choose.
"""

from __future__ import annotations

import argparse
import copy
import re
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from lorakit.cli.args import add_lora_arguments
from lorakit.errors import LorakitError
from lorakit.lora import LoraConfig, add_adapter, format_trainable_parameters
from lorakit.lora.layer import LoraLinear, ModulesToSave, linear_features
from lorakit.lora.targets import LINEAR_TYPES
from lorakit.models import MODEL_CLASSES
from lorakit.models.loading import infer_task_type, load_config
from lorakit.report.humanize import format_bytes, parse_bytes
from lorakit.task_kind import TaskKind
from lorakit.train.config import PRECISIONS, QUANTIZE
from lorakit.train.memory import PlanOptions, plan_run
from lorakit.train.pieces import padded
from lorakit.train.precision import resolve_precision


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
    plan = parser.add_argument_group("memory plan")
    plan.add_argument("--plan", action="store_true", help="estimate the peak memory of training this model")
    plan.add_argument("--batch-size", type=int, default=16, help="rows per step (default 16)")
    plan.add_argument("--max-length", type=int, default=256, help="tokens per row (default 256)")
    plan.add_argument("--precision", choices=PRECISIONS, default="auto", help="compute dtype (default auto)")
    plan.add_argument("--quantize", choices=QUANTIZE, default=None, help="a 4-bit NF4 base (QLoRA)")
    plan.add_argument("--max-memory", default=None, help="a budget such as 4GiB: show the setting that fits")


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    if args.num_labels < 1:
        raise LorakitError(f"--num-labels must be at least 1, got {args.num_labels}")
    model_config = load_config(args.model)
    task = infer_task_type(model_config) if args.task == "auto" else args.task
    if task in ("SEQ_CLS", "TOKEN_CLS"):
        model_config.num_labels = args.num_labels
    with torch.device("meta"):
        model = MODEL_CLASSES[task].from_config(copy.deepcopy(model_config))
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
    if args.plan:
        print()
        print_plan(args, model_config, task, config)
    return 0


def print_plan(args: argparse.Namespace, model_config: Any, task: str, lora: LoraConfig) -> None:
    """The planner's estimates for batch × max-length tokens: without and with checkpointing, what
    `lorakit train` picks by itself, and the setting a `--max-memory` budget leads to."""
    for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length)):
        if value <= 0:
            raise LorakitError(f"{flag} must be a positive integer, got {value}")
    precision = resolve_precision(args.precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    row_tokens = padded(args.max_length)
    budget = None
    if args.max_memory is not None:
        try:
            budget = parse_bytes(args.max_memory)
        except ValueError as error:
            raise LorakitError(f"--max-memory: {error}") from None
    storage = args.quantize or "no quantization"
    print(f"memory plan: batch {args.batch_size} × {row_tokens} tokens, {precision}, {storage}")
    for checkpointing in ("off", "on", "auto"):
        options = PlanOptions(args.batch_size, 1, precision, args.quantize, checkpointing, None)
        label = "auto (what lorakit train picks): " if checkpointing == "auto" else ""
        print(f"  {label}{plan_run(model_config, task, lora, options, row_tokens).describe()}")
    if budget is not None:
        options = PlanOptions(args.batch_size, 1, precision, args.quantize, "auto", budget)
        chosen = plan_run(model_config, task, lora, options, row_tokens)
        print(f"within {format_bytes(budget)}: {chosen.setting.describe()} ({format_bytes(chosen.peak)})")


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
