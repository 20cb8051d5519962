"""The training loop, readable top to bottom: data → model → optimise → evaluate → write the run.

One loop for every task (classification, causal LM, seq2seq: see train/tasks/). Runs on one
CPU/GPU or under `accelerate launch` (DDP): every rank takes every world-size-th
length-grouped batch, gradients are averaged by DDP, evaluation is sharded and gathered, and
only the main process writes files.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed
from transformers import AutoTokenizer

from lorakit.data.batching import LengthGroupedSampler
from lorakit.errors import LorakitError
from lorakit.lora import LoraConfig, add_adapter, trainable_parameters
from lorakit.models import resolve_model
from lorakit.models.first_token import first_token_only
from lorakit.train import outputs
from lorakit.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from lorakit.train.config import TrainConfig
from lorakit.train.dropout import use_fast_dropout
from lorakit.train.optim import build_optimizer, build_scheduler
from lorakit.train.precision import autocast, cast_frozen_parameters, resolve_precision
from lorakit.train.progress import Progress, peak_memory_bytes
from lorakit.train.run_dir import CONFIG_FILE, new_run_dir
from lorakit.train.tasks import Task, task_for


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    main_process: bool = True  # under DDP only the main process reports


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    """Train, evaluate and write one run; with `resume`, continue `config.output_dir` from its
    latest checkpoint and end exactly where an uninterrupted run would."""
    # cpu=True on a machine without CUDA lets accelerate set up gloo DDP under torchrun.
    accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    set_seed(config.seed)
    run_dir = _run_dir(accelerator, config, resume)
    precision = resolve_precision(config.precision, accelerator.device)
    task = task_for(config)

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(config.model))
    if tokenizer.pad_token is None:  # many causal LMs ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    data = task.load_data(tokenizer)
    splits = data.splits
    collate = task.collator(tokenizer)

    model = _build_model(config, task)
    quantized = _quantized_bytes(model) if config.quantize else {}
    cast_frozen_parameters(model, precision)
    if config.fast_dropout:
        use_fast_dropout(model)
    trainable, total = trainable_parameters(model)
    optimizer = build_optimizer(model, config.lr, config.weight_decay)
    batches_per_epoch = len(_epoch_batches(splits["train"], config, 0, accelerator))
    if batches_per_epoch == 0:
        raise LorakitError(
            f"the training split has {len(splits['train'])} rows, fewer than one batch per process; "
            "lower --batch-size or add data"
        )
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    scheduler = build_scheduler(optimizer, config.scheduler, total_steps, config.warmup_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)

    state = {
        "step": 0,
        "epoch": 0,
        "batch": 0,
        "history": {"train": [], "eval": []},
        "best": None,
        "bad_evals": 0,
        "train_seconds": 0.0,
        "tokens": 0,
        "samples_before": None,
    }
    checkpoint_dir = run_dir / "checkpoints"
    if resume and (checkpoint := latest_checkpoint(checkpoint_dir)) is not None:
        state = load_checkpoint(checkpoint, accelerator.unwrap_model(model), optimizer, scheduler)
    elif accelerator.is_main_process:
        # Generation tasks record a few held-out generations now, to show beside the trained ones.
        state["samples_before"] = task.samples(
            accelerator.unwrap_model(model), tokenizer, autocast(precision, accelerator.device)
        )

    def evaluate(split: str) -> dict[str, Any]:
        return _evaluate(accelerator, model, task, splits[split], collate, autocast(precision, accelerator.device))

    info = outputs.model_info(config, task.model_info())

    def save_best() -> None:
        if accelerator.is_main_process:
            outputs.save_model(accelerator.unwrap_model(model), run_dir, config, info, tokenizer)
        accelerator.wait_for_everyone()

    progress = Progress(total_steps, state["step"], quiet=config.quiet, silent=not accelerator.is_main_process)
    if task.evaluate_before_training and not state["history"]["eval"]:
        # The untrained model's validation loss: the point the curve should fall from.
        _record_eval(evaluate("validation"), task, state, config, 0.0, progress, save_best)
    model.train()
    stop = state["step"] >= total_steps
    while not stop:
        epoch = state["epoch"]
        batches = _epoch_batches(splits["train"], config, epoch, accelerator)
        started = time.perf_counter()
        accumulated, micro_batches = 0.0, 0
        for index in range(state["batch"], len(batches)):
            rows = [splits["train"][i] for i in batches[index]]
            batch = {k: v.to(accelerator.device) for k, v in collate(rows).items()}
            last_in_epoch = index == len(batches) - 1
            sync = (index + 1) % config.gradient_accumulation_steps == 0 or last_in_epoch
            # Between optimizer steps DDP need not all-reduce: gradients just accumulate locally.
            with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                with autocast(precision, accelerator.device):
                    loss = task.training_loss(model, batch) / config.gradient_accumulation_steps
                accelerator.backward(loss)
            accumulated, micro_batches = accumulated + loss.detach(), micro_batches + 1
            state["tokens"] += sum(len(row["input_ids"]) for row in rows)  # real tokens: padding excluded
            if not sync:
                continue
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] = index + 1
            # The mean loss of this step's micro-batches (each was divided by the accumulation count).
            mean_loss = accumulated * config.gradient_accumulation_steps / micro_batches
            step_loss = accelerator.reduce(mean_loss, "mean").item()
            accumulated, micro_batches = 0.0, 0
            now = time.perf_counter()
            state["train_seconds"] += now - started
            started = now
            progress.update(step_loss, state["tokens"] * accelerator.num_processes, state["train_seconds"])
            epoch_position = epoch + (index + 1) / len(batches)
            if state["step"] % config.log_steps == 0 or state["step"] == 1:
                state["history"]["train"].append(
                    {
                        "step": state["step"],
                        "epoch": round(epoch_position, 4),
                        "loss": step_loss,
                        "lr": scheduler.get_last_lr()[0],
                    }
                )
            epoch_done = last_in_epoch
            if epoch_done:
                state["epoch"], state["batch"] = epoch + 1, 0
            due_eval = (
                (config.eval_steps and state["step"] % config.eval_steps == 0)
                or (not config.eval_steps and epoch_done)
                or state["step"] >= total_steps
            )
            if due_eval:
                stop = _record_eval(evaluate("validation"), task, state, config, epoch_position, progress, save_best)
            stop = stop or state["step"] >= total_steps
            if state["step"] % config.checkpoint_steps == 0 or stop:
                if accelerator.is_main_process:
                    save_checkpoint(
                        checkpoint_dir, state["step"], accelerator.unwrap_model(model), optimizer, scheduler, state
                    )
                accelerator.wait_for_everyone()
            started = time.perf_counter()
            if stop or epoch_done:
                break
    progress.close()

    # Test with the best weights (validation runs at least once: at the last step).
    outputs.restore_best(accelerator.unwrap_model(model), run_dir)
    test = evaluate("test")
    tokens = accelerator.reduce(torch.tensor(state["tokens"], device=accelerator.device), "sum").item()
    samples_after = None
    if accelerator.is_main_process:
        samples_after = task.samples(
            accelerator.unwrap_model(model), tokenizer, autocast(precision, accelerator.device)
        )
    metrics = {
        "task": config.task,
        "model": config.model,
        "dataset": data.source,
        "method": config.method,
        **task.test_metrics(test),
        **task.sample_metrics(state["samples_before"], samples_after),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "train_seconds": round(state["train_seconds"], 2),
        "tokens_per_second": round(tokens / max(state["train_seconds"], 1e-9), 1),
        "peak_memory_bytes": peak_memory_bytes(accelerator.device),
        "steps": state["step"],
        "epochs": config.epochs,
        "best_epoch": (state["best"] or {}).get("epoch"),
        "device": accelerator.device.type,
        "precision": precision,
        "processes": accelerator.num_processes,
        "train_examples": len(data.raw["train"]),
        "validation_examples": len(data.raw["validation"]),
        "test_examples": len(data.raw["test"]),
        **quantized,
        "data_notes": data.notes,
    }
    if accelerator.is_main_process:
        metrics["adapter_bytes"] = outputs.artifact_bytes(run_dir, config)
        outputs.write_run(run_dir, metrics, state["history"])
        task.write_report(run_dir, metrics, state["history"], test, state["samples_before"], samples_after)
    accelerator.wait_for_everyone()
    return RunResult(run_dir, metrics, accelerator.is_main_process)


def _run_dir(accelerator: Accelerator, config: TrainConfig, resume: bool) -> Path:
    """Decided on the main process and shared, so all ranks write to the same folder."""
    chosen = [None]
    if accelerator.is_main_process:
        folder = Path(config.output_dir) if resume else new_run_dir(config)
        folder.mkdir(parents=True, exist_ok=True)
        config.output_dir = str(folder)
        if not resume:
            config.save(folder / CONFIG_FILE)
        chosen = [str(folder)]
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen)
    config.output_dir = chosen[0]
    return Path(chosen[0])


def _build_model(config: TrainConfig, task: Task) -> torch.nn.Module:
    """The task's base model, its linears quantized when asked (QLoRA), then the adapter on top."""
    model = task.build_model()
    if config.first_token_only:  # before LoRA wraps the head, whose class it checks; no-op where not exact
        first_token_only(model)
    if config.quantize:
        from lorakit.quant import quantize_model

        quantize_model(model, config.quantize)
    if config.method == "lora":
        lora = LoraConfig(
            task_type=task.peft_task_type,
            base_model_name_or_path=outputs.portable_model_name(config.model),
            **config.lora_config_kwargs(),
        )
        add_adapter(model, lora)
    return model


def _quantized_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Base-weight bytes of the quantized linears against the same weights in fp32/bf16, for metrics.json."""
    from lorakit.quant import quantized_weight_bytes

    return quantized_weight_bytes(model)


def _epoch_batches(split: list[dict], config: TrainConfig, epoch: int, accelerator: Accelerator) -> list[list[int]]:
    """This rank's batches for `epoch`: a pure function of (seed, epoch), so resuming can jump
    straight to any batch. Ranks take every world-size-th batch; leftovers are dropped so all
    ranks run the same number of steps."""
    lengths = [len(example["input_ids"]) for example in split]
    if config.group_by_length:
        sampler = LengthGroupedSampler(lengths, config.batch_size, seed=config.seed)
        sampler.set_epoch(epoch)
        order = list(sampler)
    else:
        generator = torch.Generator().manual_seed(config.seed + epoch)
        order = torch.randperm(len(split), generator=generator).tolist()
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    world, rank = accelerator.num_processes, accelerator.process_index
    usable = len(batches) // world * world
    return batches[rank:usable:world]


def _evaluate(
    accelerator: Accelerator,
    model: torch.nn.Module,
    task: Task,
    split: list[dict],
    collate,
    autocast_context: contextlib.AbstractContextManager,
) -> dict[str, Any]:
    """The task's metrics over a whole split, sharded over ranks (by length, so each rank's batches
    pad little) and gathered back in order."""
    order = sorted(range(len(split)), key=lambda i: len(split[i]["input_ids"]))
    mine = order[accelerator.process_index :: accelerator.num_processes]
    part = task.evaluate_shard(accelerator.unwrap_model(model), [split[i] for i in mine], collate, autocast_context)
    parts = gather_object([(mine, part)]) if accelerator.num_processes > 1 else [(mine, part)]
    return task.combine(parts, split)


def _record_eval(
    result: dict[str, Any],
    task: Task,
    state: dict[str, Any],
    config: TrainConfig,
    epoch: float,
    progress: Progress,
    save_best,
) -> bool:
    """Log a validation result and keep the weights if they are the best so far; True = stop early."""
    entry = {"step": state["step"], "epoch": round(epoch, 4), **task.eval_entry(result)}
    state["history"]["eval"].append(entry)
    values = ", ".join(f"{key} {value:.4f}" for key, value in entry.items() if key not in ("step", "epoch"))
    progress.note(f"step {state['step']}: validation {values}")
    if task.is_better(result, state["best"]):
        state["best"], state["bad_evals"] = entry, 0
        save_best()
        return False
    state["bad_evals"] += 1
    patience = config.early_stopping_patience
    if patience and state["bad_evals"] >= patience:
        progress.note(f"early stopping: validation {task.selection_metric} has not improved in {patience} evaluations")
        return True
    return False
