"""The training loop, readable top to bottom: set up → (resume) → optimise and evaluate → write the run.

One loop for every task (classification, causal LM, seq2seq: see train/tasks/). Runs on one
CPU/GPU or under `accelerate launch` / `torchrun` (DDP): every rank takes every world-size-th
length-grouped batch, gradients are averaged by DDP, evaluation is sharded and gathered, and
only the main process writes files.

    run   = setup(config, resume, lock)    accelerator, run folder (locked), task, data, model, optimizer
    state = TrainState()                   or the newest intact checkpoint's (exact resume)
    while not done: train_epoch(...)       micro-batches → optimizer steps → eval → checkpoints
    finish(run, state)                     best weights → test → metrics.json, report.html
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object, set_seed

from lorakit.artifacts import ArtifactInfo
from lorakit.data.batching import LengthGroupedSampler
from lorakit.errors import LorakitError, RunInterrupted
from lorakit.heap import return_large_blocks
from lorakit.lora import LoraConfig, add_adapter, trainable_parameters
from lorakit.models import load_tokenizer
from lorakit.models.activation_checkpointing import checkpointing_paused, enable_activation_checkpointing
from lorakit.models.first_token import first_token_only
from lorakit.models.loading import load_config
from lorakit.quant import OUTPUT_HEADS, load_nf4, quantize_model
from lorakit.train import outputs
from lorakit.train.checkpoint import load_checkpoint, newest_intact, save_checkpoint
from lorakit.train.config import TrainConfig
from lorakit.train.fast_paths import use_fast_paths
from lorakit.train.fit import (
    check_context,
    check_run,
    check_same_config,
    leftover_batches,
    plan_memory,
    report_shards,
    row_sizes,
)
from lorakit.train.launcher import with_launcher_settings
from lorakit.train.memory import MemoryEstimate
from lorakit.train.optim import build_optimizer, build_scheduler
from lorakit.train.pieces import cut
from lorakit.train.precision import autocast, cast_frozen_parameters, resolve_precision, storage_dtype
from lorakit.train.progress import Progress, StepTimer, peak_memory_bytes
from lorakit.train.run_dir import CONFIG_FILE, new_run_dir
from lorakit.train.run_lock import RunLock
from lorakit.train.sharding import check_shardable, gradient_sync, shard_from_main, shard_model
from lorakit.train.state import TrainState
from lorakit.train.tasks import LossModule, Outcome, Task, TaskData, task_for


@dataclass
class RunResult:
    """What `train` returns: the run folder and its metrics (under DDP only the main process reports)."""

    run_dir: Path
    metrics: dict[str, Any]
    main_process: bool = True


@dataclass
class Run:
    """Everything a run holds that does not change while it trains (`TrainState` is what does)."""

    config: TrainConfig
    accelerator: Accelerator
    run_dir: Path
    precision: str  # "fp32", "bf16", "fp16"
    task: Task
    tokenizer: Any
    data: TaskData
    collate: Any
    model: torch.nn.Module  # LossModule(core) prepared by accelerate (DDP-wrapped under several processes)
    core: torch.nn.Module  # the transformers model with its adapter: what is evaluated and saved
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    info: ArtifactInfo  # lorakit.json of the adapter (or model) the run writes
    trainable_params: int
    total_params: int
    quantized: dict[str, int]  # QLoRA: base-weight bytes in NF4 against fp32/bf16, for metrics.json
    memory: MemoryEstimate  # the planner's estimate and the setting it chose

    def autocast(self) -> contextlib.AbstractContextManager:
        """The compute-precision context for forward passes."""
        return autocast(self.precision, self.accelerator.device)


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    """Train, evaluate and write one run; with `resume`, continue `config.output_dir` from its
    newest intact checkpoint and end exactly where an uninterrupted run would. The run folder is
    locked against a second `lorakit train` until this returns (train/run_lock.py).

    Raises:
        LorakitError: the config, data, model or output folder cannot make this run.
        RunInterrupted: Ctrl-C once the run folder exists; it names the folder to resume.
    """
    with RunLock() as lock:
        run = setup(config, resume, lock)
        try:
            return train_run(run, resume)
        except KeyboardInterrupt:
            if run.accelerator.is_main_process:
                raise RunInterrupted(run.run_dir) from None
            raise


def train_run(run: Run, resume: bool) -> RunResult:
    """Everything after setup: resume, train, test, write."""
    state = start_state(run, resume)
    main = run.accelerator.is_main_process
    quiet = run.config.quiet
    progress = Progress(run.total_steps, state.step, quiet=quiet, silent=not main, estimate=run.memory.peak)
    try:
        if state.step == 0 and state.samples_before is None and _takes_part(run):
            # Generation tasks record a few held-out generations now, to show beside the trained ones.
            state.samples_before = samples(run, progress)
        if run.task.evaluate_before_training and not state.history["eval"]:
            # The untrained model's validation loss: the point the curve should fall from.
            record_eval(run, state, evaluate(run, "validation", progress), 0.0, progress)
        run.model.train()
        done = state.step >= run.total_steps
        while not done:
            done = train_epoch(run, state, progress)
    finally:
        progress.close()
    return finish(run, state, progress)


def setup(config: TrainConfig, resume: bool, lock: RunLock) -> Run:
    """Accelerator, task data, the memory plan, run folder, the model with its adapter, optimizer
    and schedule. Everything that can refuse the run (data, model, budget) does so before the run
    folder is written; a folder that exists already is locked (`lock`) first of all, so a second
    run into it is refused before it loads anything."""
    config = with_launcher_settings(config)  # `accelerate launch` with an FSDP config: --fsdp
    # cpu=True on a machine without CUDA lets accelerate set up gloo DDP under torchrun.
    accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
    if config.output_dir and Path(config.output_dir).is_dir():
        _lock_run_dir(accelerator, lock, Path(config.output_dir))
    if accelerator.device.type == "cpu":
        return_large_blocks()  # activations freed in a step go back to the OS (see lorakit/heap.py)
    set_seed(config.seed)
    precision = resolve_precision(config.precision, accelerator.device)
    task = task_for(config)
    check_run(config, accelerator.device.type, accelerator.num_processes)
    check_same_config(config, accelerator)
    model_config = load_config(config.model)
    tokenizer = load_tokenizer(config.model)
    if tokenizer.pad_token is None:  # many causal LMs ship without one; padding is masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    data = task.load_data(tokenizer)
    if accelerator.is_main_process:  # rows skipped, splits carved, possible leakage: shown, not only filed
        for note in data.notes:
            print(f"data: {note}", file=sys.stderr, flush=True)
    check_context(config, model_config, data)
    memory = plan_memory(config, model_config, data, precision, accelerator, resume)
    total_steps = _total_steps(config, data, accelerator)

    # Under FSDP only the main process loads a full-precision base; the others build on the meta
    # device. A 4-bit base is small: every process quantizes its own as it loads.
    empty = config.fsdp and not config.quantize and not accelerator.is_main_process
    core = build_model(config, task, data, precision, empty=empty)
    run_dir = _run_dir(accelerator, config, resume, lock)  # once the model loaded: a refused one writes nothing
    quantized = _quantized_bytes(core) if config.quantize else {}
    cast_frozen_parameters(core, precision)
    use_fast_paths(core, config.fast_dropout)
    if memory.setting.checkpointing:
        enable_activation_checkpointing(core, config.offload_activations, accelerator.device.type)
    if config.fsdp:  # before the optimizer: it holds the shards
        _shard(core, config, accelerator)
    trainable, total = trainable_parameters(core)
    optimizer = build_optimizer(core, config.lr, config.weight_decay)
    scheduler = build_scheduler(optimizer, config.scheduler, total_steps, config.warmup_ratio)
    if config.fsdp:  # FSDP2 reduces the gradients itself: no DDP wrapper
        model = LossModule(core, task.training_loss)
    else:
        # The loss runs inside the prepared module, so DDP sees every forward (a chunked LM loss
        # calls the model's body and head apart).
        model, optimizer = accelerator.prepare(LossModule(core, task.training_loss), optimizer)
    return Run(
        config=config,
        accelerator=accelerator,
        run_dir=run_dir,
        precision=precision,
        task=task,
        tokenizer=tokenizer,
        data=data,
        collate=task.collator(tokenizer),
        model=model,
        core=core,
        optimizer=optimizer,
        scheduler=scheduler,
        total_steps=total_steps,
        info=outputs.artifact_info(config, task.artifact_facts(data)),
        trainable_params=trainable,
        total_params=total,
        quantized=quantized,
        memory=memory,
    )


def _shard(core: torch.nn.Module, config: TrainConfig, accelerator: Accelerator) -> None:
    """FSDP2 over the launched processes: a full-precision base from the main process's weights
    (the others built it empty); a 4-bit base, which every process loaded, split where it stands."""
    if config.quantize:
        check_shardable(core, accelerator.num_processes)
        shard_model(core)
    else:
        shard_from_main(core, accelerator.is_main_process, accelerator.device)
    report_shards(core, accelerator)


def _total_steps(config: TrainConfig, data: TaskData, accelerator: Accelerator) -> int:
    """Optimizer steps of the whole run: max_steps, else epochs × steps per epoch."""
    batches_per_epoch = len(epoch_batches(data.splits["train"], config, 0, accelerator))
    if batches_per_epoch == 0:
        raise LorakitError(
            f"the training split has {len(data.splits['train'])} rows, fewer than one batch per process; "
            "lower --batch-size or add data"
        )
    note = leftover_batches(len(data.splits["train"]), config.batch_size, accelerator.num_processes)
    if note and accelerator.is_main_process:
        print(note, file=sys.stderr, flush=True)
    steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
    return config.max_steps or math.ceil(config.epochs * steps_per_epoch)


def build_model(
    config: TrainConfig, task: Task, data: TaskData, precision: str, empty: bool = False
) -> torch.nn.Module:
    """The task's base model, its linears quantized when asked (QLoRA), then the adapter on top
    (`empty`: parameters on the meta device, for a process whose weights come from another).

    Loading reads one tensor at a time (models/low_memory.py). A generative base loads straight
    in its storage dtype (bf16 when training computes in bf16); with `nf4`, each body Linear is
    quantized as it loads (quant/loading.py), so no full-precision model ever exists."""
    if config.quantize == "nf4":
        model = load_nf4(lambda: task.build_model(data, torch.float32), OUTPUT_HEADS)
    else:
        model = task.build_model(data, storage_dtype(precision), empty=empty)
        if config.quantize:
            quantize_model(model, config.quantize)
    if config.first_token_only:  # before LoRA wraps the head, whose class it checks; no-op where not exact
        first_token_only(model)
    if config.method == "lora":
        lora = LoraConfig(
            task_type=config.task.peft_type,
            base_model_name_or_path=outputs.portable_model_name(config.model),
            **config.lora_config_kwargs(),
        )
        add_adapter(model, lora)
    return model


def _takes_part(run: Run) -> bool:
    """Whether this process joins what only the main process writes: the main process always,
    every process of a sharded model (gathering its shards, or each forward, is collective)."""
    return run.accelerator.is_main_process or run.config.fsdp


def start_state(run: Run, resume: bool) -> TrainState:
    """A fresh state, or on resume the newest intact checkpoint's (weights, optimizer and schedule
    restored too). Resuming says in one line each which checkpoint it continues from and which
    newer ones it skipped as damaged, and, in a folder without any, that it starts from step 0.

    Raises:
        LorakitError: the run folder has checkpoints and none of them is intact.
    """
    state = TrainState()
    if not resume:
        return state
    folder = run.run_dir / "checkpoints"
    found = newest_intact(folder)
    notes = [f"resume: skipped {folder / name}: {why}" for name, why in found.skipped]
    if found.path is None and found.skipped:
        _say(run, notes)
        raise LorakitError(
            f"no intact checkpoint in {folder} (each is damaged: see above); delete that folder to train "
            f"{run.run_dir} again from step 0"
        )
    if found.path is None:
        _say(run, [f"resume: no checkpoint in {run.run_dir}; starting from step 0"])
        return state
    saved = load_checkpoint(found.path, run.core, run.optimizer, run.scheduler)
    state.load_state_dict(saved, source=f"checkpoint {found.path}")
    unverified = "" if found.checksummed else " (written without checksums by an earlier lorakit: not verified)"
    _say(run, [*notes, f"resume: continuing from {found.path}, step {state.step} of {run.total_steps}{unverified}"])
    return state


def _say(run: Run, lines: list[str]) -> None:
    """Print lines to stderr from the main process (before the progress bar exists)."""
    if run.accelerator.is_main_process:
        for line in lines:
            print(line, file=sys.stderr, flush=True)


def samples(run: Run, progress: Progress) -> list | None:
    """The task's held-out generations for the report (None for tasks without them)."""
    count = run.config.generation_samples if run.config.task.generates else 0
    if not count:
        return run.task.samples(run.core, run.tokenizer, run.autocast(), run.data)
    with progress.phase(f"generating {count} held-out samples of up to {run.config.max_new_tokens} tokens"):
        return run.task.samples(run.core, run.tokenizer, run.autocast(), run.data)


def train_epoch(run: Run, state: TrainState, progress: Progress) -> bool:
    """Train this rank's batches of `state.epoch` from `state.batch` on; True once the run is over
    (the last step, or early stopping). Returns after the epoch's last batch."""
    config = run.config
    batches = epoch_batches(run.data.splits["train"], config, state.epoch, run.accelerator)
    timer = StepTimer()
    losses: list[torch.Tensor] = []
    for index in range(state.batch, len(batches)):
        last_in_epoch = index == len(batches) - 1
        sync = (index + 1) % config.gradient_accumulation_steps == 0 or last_in_epoch
        timer.start()
        losses.append(forward_backward(run, state, batches[index], sync))
        if not sync:
            continue
        step_loss = optimizer_step(run, losses)
        losses = []
        state.step, state.batch = state.step + 1, index + 1
        state.train_seconds += timer.stop()
        progress.update(step_loss, state.tokens * run.accelerator.num_processes, state.train_seconds)
        epoch_position = state.epoch + (index + 1) / len(batches)
        if state.step % config.log_steps == 0 or state.step == 1:
            state.record_train_loss(epoch_position, step_loss, run.scheduler.get_last_lr()[0])
        if last_in_epoch:
            state.epoch, state.batch = state.epoch + 1, 0
        done = after_step(run, state, progress, epoch_position, last_in_epoch)
        if done or last_in_epoch:
            return done
    return False


def forward_backward(run: Run, state: TrainState, batch: list[int], sync: bool) -> torch.Tensor:
    """Loss and gradients of one micro-batch (rows `batch` of train), in the pieces its setting
    cuts it into (train/pieces.py); returns the detached loss, already divided by the
    accumulation count."""
    rows = [run.data.splits["train"][i] for i in batch]
    pieces = cut([row_sizes(row, run.config.task) for row in rows], run.memory.setting.piece_tokens)
    device = run.accelerator.device
    inputs = [{k: v.to(device) for k, v in run.collate([rows[i] for i in p.rows]).items()} for p in pieces]
    terms = [run.task.loss_terms(piece_inputs) for piece_inputs in inputs]
    loss = torch.zeros((), device=device)
    for index, (piece, piece_inputs) in enumerate(zip(pieces, inputs, strict=True)):
        # A piece's mean loss weighs by its share of the terms: the sum is the micro-batch's mean.
        share = terms[index] / sum(terms) if sum(terms) else 1 / len(pieces)
        # Between optimizer steps DDP/FSDP need not reduce: gradients just accumulate locally.
        with _gradient_sync(run, sync and index == len(pieces) - 1):
            paused = checkpointing_paused(run.core) if piece.unchecked else contextlib.nullcontext()
            with paused, run.autocast():
                part = run.model(piece_inputs) * share / run.config.gradient_accumulation_steps
            run.accelerator.backward(part)
        loss += part.detach()
    state.tokens += sum(len(row["input_ids"]) for row in rows)  # real tokens: padding excluded
    return loss


def _gradient_sync(run: Run, enabled: bool) -> contextlib.AbstractContextManager:
    """Gradients reduced over ranks after this backward (`enabled`), or accumulated locally."""
    if run.config.fsdp:
        return gradient_sync(run.core, enabled)
    return contextlib.nullcontext() if enabled else run.accelerator.no_sync(run.model)


def optimizer_step(run: Run, losses: list[torch.Tensor]) -> float:
    """Clip, step, schedule, zero the gradients; returns the step's mean micro-batch loss,
    averaged over processes."""
    if run.config.max_grad_norm:
        run.accelerator.clip_grad_norm_(run.model.parameters(), run.config.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    # Each micro-batch loss was divided by the accumulation count: undo that for the mean.
    mean_loss = sum(losses) * run.config.gradient_accumulation_steps / len(losses)
    return run.accelerator.reduce(mean_loss, "mean").item()


def after_step(run: Run, state: TrainState, progress: Progress, epoch_position: float, epoch_done: bool) -> bool:
    """Validate when due, then checkpoint when due; True once the run is over."""
    config = run.config
    done = False
    if eval_due(config, state.step, epoch_done, run.total_steps):
        done = record_eval(run, state, evaluate(run, "validation", progress), epoch_position, progress)
    done = done or state.step >= run.total_steps
    if state.step % config.checkpoint_steps == 0 or done:
        if _takes_part(run):
            checkpoints = run.run_dir / "checkpoints"
            main = run.accelerator.is_main_process
            save_checkpoint(checkpoints, state.step, run.core, run.optimizer, run.scheduler, state.state_dict(), main)
        run.accelerator.wait_for_everyone()
    return done


def eval_due(config: TrainConfig, step: int, epoch_done: bool, total_steps: int) -> bool:
    """Every `eval_steps` steps when set, else at the end of each epoch; always at the last step."""
    if config.eval_steps:
        return step % config.eval_steps == 0 or step >= total_steps
    return epoch_done or step >= total_steps


def evaluate(run: Run, split: str, progress: Progress) -> dict[str, Any]:
    """The task's metrics over a whole split, sharded over ranks and gathered back in order."""
    rows = run.data.splits[split]
    accelerator = run.accelerator
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    mine, short = deal_batches(order, run.task.eval_rows(), accelerator.num_processes, accelerator.process_index)
    with progress.phase(f"{split}: scoring {len(rows):,} examples"):
        part = run.task.evaluate_shard(run.core, [rows[i] for i in mine], run.collate, run.autocast())
        if short and run.config.fsdp:  # each forward of a sharded model needs every rank: match theirs
            run.task.evaluate_shard(run.core, [rows[order[0]]], run.collate, run.autocast())
    parts = gather_object([(mine, part)]) if accelerator.num_processes > 1 else [(mine, part)]
    return run.task.combine(parts, rows, run.data)


def deal_batches(order: list[int], size: int, world: int, rank: int) -> tuple[list[int], bool]:
    """This rank's rows of `order` (row indices sorted by length, so each batch pads little): cut
    into batches of `size`, dealt round-robin; and whether it was dealt one batch fewer than some
    other rank (whole batches are dealt, so it is never more than one)."""
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    dealt = batches[rank::world]
    return [i for batch in dealt for i in batch], len(dealt) < -(-len(batches) // world)


def record_eval(run: Run, state: TrainState, result: dict[str, Any], epoch: float, progress: Progress) -> bool:
    """Log a validation result and keep the weights if they are the best so far; True = stop early."""
    task = run.task
    entry = {"step": state.step, "epoch": round(epoch, 4), **task.eval_entry(result)}
    state.history["eval"].append(entry)
    values = ", ".join(f"{key} {value:.4f}" for key, value in entry.items() if key not in ("step", "epoch"))
    progress.note(f"step {state.step}: validation {values}")
    if task.is_better(result, state.best):
        state.best, state.bad_evals = entry, 0
        if _takes_part(run):
            outputs.save_model(run.core, run.run_dir, run.info, run.tokenizer, run.accelerator.is_main_process)
        run.accelerator.wait_for_everyone()
        return False
    state.bad_evals += 1
    patience = run.config.early_stopping_patience
    if patience and state.bad_evals >= patience:
        progress.note(f"early stopping: validation {task.selection_metric} has not improved in {patience} evaluations")
        return True
    return False


def finish(run: Run, state: TrainState, progress: Progress) -> RunResult:
    """Test the best weights (validation ran at least once: at the last step), then write
    metrics.json, history.json, the plots and the report."""
    main = run.accelerator.is_main_process
    outputs.restore_best(run.core, run.run_dir, main)
    test = evaluate(run, "test", progress)
    samples_after = samples(run, progress) if _takes_part(run) else None
    metrics = final_metrics(run, state, test, samples_after)
    if run.accelerator.is_main_process:
        metrics["adapter_bytes"] = outputs.artifact_bytes(run.run_dir, run.config)
        outputs.write_run(run.run_dir, metrics, state.history)
        outcome = Outcome(metrics, state.history, test, state.samples_before, samples_after)
        run.task.write_report(run.run_dir, run.data, outcome)
    run.accelerator.wait_for_everyone()
    return RunResult(run.run_dir, metrics, run.accelerator.is_main_process)


def final_metrics(run: Run, state: TrainState, test: dict[str, Any], samples_after: list | None) -> dict[str, Any]:
    """metrics.json: the task's test metrics and the run's facts (sizes, time, speed, memory)."""
    config, accelerator, data = run.config, run.accelerator, run.data
    tokens = accelerator.reduce(torch.tensor(state.tokens, device=accelerator.device), "sum").item()
    trainable, total = run.trainable_params, run.total_params
    return {
        "task": config.task.value,
        "model": config.model,
        "dataset": data.source,
        "method": config.method,
        **run.task.test_metrics(test),
        **run.task.sample_metrics(state.samples_before, samples_after),
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": round(100 * trainable / total, 4),
        "train_seconds": round(state.train_seconds, 2),
        "tokens_per_second": round(tokens / max(state.train_seconds, 1e-9), 1),
        "peak_memory_bytes": peak_memory_bytes(accelerator.device),
        "estimated_peak_memory_bytes": run.memory.peak,
        "gradient_checkpointing": run.memory.setting.checkpointing,
        "piece_tokens": run.memory.setting.piece_tokens,
        "micro_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "steps": state.step,
        "epochs": config.epochs,
        "best_epoch": (state.best or {}).get("epoch"),
        "device": accelerator.device.type,
        "precision": run.precision,
        "processes": accelerator.num_processes,
        "train_examples": len(data.raw["train"]),
        "validation_examples": len(data.raw["validation"]),
        "test_examples": len(data.raw["test"]),
        **run.quantized,
        "data_notes": data.notes,
    }


def _run_dir(accelerator: Accelerator, config: TrainConfig, resume: bool, lock: RunLock) -> Path:
    """Decided on the main process, locked there (`lock`), and shared, so all ranks write to the
    same folder."""
    chosen = [None]
    if accelerator.is_main_process:
        folder = Path(config.output_dir) if resume else new_run_dir(config)
        folder.mkdir(parents=True, exist_ok=True)
        chosen = [str(folder)]
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen)
    folder = Path(chosen[0])
    _lock_run_dir(accelerator, lock, folder)
    config.output_dir = str(folder)
    if accelerator.is_main_process and not resume:
        new_run_dir(config)  # checked again under the lock: another run may have taken the folder meanwhile
        config.save(folder / CONFIG_FILE)
    return folder


def _lock_run_dir(accelerator: Accelerator, lock: RunLock, folder: Path) -> None:
    """The main process locks `folder`; when another run holds it, every rank raises its one line
    (the others would otherwise wait in the next collective for a main process that has gone)."""
    refused = [None]
    if accelerator.is_main_process:
        try:
            lock.acquire(folder)
        except LorakitError as error:
            refused = [str(error)]
    if accelerator.num_processes > 1:
        broadcast_object_list(refused)
    if refused[0]:
        raise LorakitError(refused[0])


def _quantized_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Base-weight bytes of the quantized linears against the same weights in fp32/bf16, for metrics.json."""
    from lorakit.quant import quantized_weight_bytes

    return quantized_weight_bytes(model)


def epoch_batches(split: list[dict], config: TrainConfig, epoch: int, accelerator: Accelerator) -> list[list[int]]:
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
