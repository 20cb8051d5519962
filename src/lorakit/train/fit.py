"""Fitting a run to its machine before anything is loaded: the context length and the memory plan.

The planner (train/memory.py) estimates; this module asks it about one `TrainConfig` and its
data, and writes its choice back into the config (`batch_size`, `gradient_accumulation_steps`,
`gradient_checkpointing` as "on"/"off", `piece_tokens`), so config.yaml records what ran and
`--resume` repeats it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object

from lorakit.errors import LorakitError, option_name
from lorakit.folders import check_writable_folder
from lorakit.lora import LoraConfig
from lorakit.models.activation_checkpointing import check_offload
from lorakit.models.loading import context_length
from lorakit.task_kind import TaskKind
from lorakit.train.config import TrainConfig
from lorakit.train.memory import MemoryEstimate, PlanOptions, plan_run
from lorakit.train.pieces import PAD_MULTIPLE, padded
from lorakit.train.run_dir import RUNS_ROOT
from lorakit.train.tasks import TaskData


def check_run(config: TrainConfig, device_type: str, processes: int = 1) -> None:
    """Refuse, before anything is loaded or written, an output folder that cannot be written,
    activation offloading where there is no GPU to offload from, and sharding in a single process."""
    check_writable_folder(Path(config.output_dir or RUNS_ROOT), option_name("output_dir"))
    if config.offload_activations:
        check_offload(device_type)
    if config.fsdp and processes < 2:
        raise LorakitError(
            "--fsdp shards the model over several processes, and this run has one: launch it with "
            "torchrun --nproc_per_node N -m lorakit.cli.main train ... (or accelerate launch)"
        )


def check_same_config(config: TrainConfig, accelerator: Accelerator) -> None:
    """Refuse a launch whose processes were given different settings (each would train something
    else, or wait forever in a collective the others never reach): every rank raises the same
    one-line error naming the first setting that differs."""
    if accelerator.num_processes < 2:
        return
    everyone = gather_object([config.to_dict()])
    first = everyone[0]
    for rank, other in enumerate(everyone):
        differing = sorted(key for key in first.keys() | other.keys() if other.get(key) != first.get(key))
        if differing:
            key = differing[0]
            raise LorakitError(
                f"the launched processes were given different settings: {key} is {first.get(key)!r} on "
                f"rank 0 and {other.get(key)!r} on rank {rank}; launch every process with the same flags"
            )


def check_context(config: TrainConfig, model_config: Any, data: TaskData) -> None:
    """Refuse rows longer than the model has positions for (its outputs there would be garbage):
    a --max-length above the context is fine while no row reaches past it."""
    context = context_length(model_config)
    if context is None or config.max_length <= context:
        return
    # Classification labels are ints; token rows (inputs, causal and seq2seq labels) are lists.
    rows = (row for split in data.splits.values() for row in split)
    longest = max((len(value) for row in rows for value in row.values() if isinstance(value, list)), default=0)
    if longest > context:
        raise LorakitError(
            f"--max-length {config.max_length} lets through rows of {longest} tokens, above {config.model}'s "
            f"context of {context} positions; use --max-length {context} or less"
        )


def plan_memory(
    config: TrainConfig,
    model_config: Any,
    data: TaskData,
    precision: str,
    accelerator: Accelerator,
    resume: bool,
) -> MemoryEstimate:
    """Estimate the run's peak memory, choose micro-batch, checkpointing and pieces (see
    `memory.choose_setting`), print the estimate, and write the choice into `config`.

    On resume the saved setting is kept as it is (a new choice would change the batches). Under
    several processes the main process decides and the others follow.
    """
    if data.label_names is not None:
        model_config = copy.deepcopy(model_config)
        model_config.num_labels = len(data.label_names)
    lora = None
    if config.method == "lora":
        lora = LoraConfig(task_type=config.task.peft_type, **config.lora_config_kwargs())
    options = PlanOptions(
        micro_batch=config.batch_size,
        accumulation=config.gradient_accumulation_steps,
        precision=precision,
        quantize=config.quantize,
        checkpointing=config.gradient_checkpointing,
        budget=None if resume else config.max_memory_bytes(),
        fast_dropout=config.fast_dropout,
        piece_tokens=config.piece_tokens,
        shards=accelerator.num_processes if config.fsdp else 1,
    )
    if resume and options.checkpointing == "auto":
        options = PlanOptions(**{**options.__dict__, "checkpointing": "off"})
    estimate = plan_run(
        model_config, config.task.peft_type, lora, options, longest_row(config, data), accelerator.device.type
    )
    if accelerator.num_processes > 1:
        shared = [estimate]
        broadcast_object_list(shared)
        estimate = shared[0]
    setting = estimate.setting
    config.batch_size, config.gradient_accumulation_steps = setting.micro_batch, setting.accumulation
    config.gradient_checkpointing = "on" if setting.checkpointing else "off"
    config.piece_tokens = setting.piece_tokens
    if accelerator.is_main_process:
        print(f"memory: {estimate.describe()}", file=sys.stderr, flush=True)
    return estimate


def leftover_batches(rows: int, batch_size: int, processes: int) -> str | None:
    """One line when an epoch's batches do not split evenly over the processes: every process must
    take as many (each step is collective), so the remainder sits out that epoch; None otherwise."""
    batches = -(-rows // batch_size)
    left = batches % processes
    if processes < 2 or left == 0 or batches < processes:
        return None
    return (
        f"data: the {batches} batches of an epoch do not split evenly over {processes} processes; each takes "
        f"{batches // processes} and {left} sit{'s' if left == 1 else ''} out each epoch (batches are "
        f"reshuffled every epoch); a --batch-size giving a multiple of {processes} batches uses every row"
    )


def report_shards(model: Any, accelerator: Accelerator) -> None:
    """One line: the share of the frozen weights each process of a sharded run holds, measured on
    the main one (the others hold the same, give or take one row of padding)."""
    from lorakit.report.humanize import format_bytes
    from lorakit.train.sharding import sharded_bytes

    held, whole = sharded_bytes(model)
    n = accelerator.num_processes
    if accelerator.is_main_process:
        print(
            f"sharding: each of {n} processes holds 1/{n} of the frozen weights ({format_bytes(held)} "
            f"of {format_bytes(whole)} here)",
            file=sys.stderr,
            flush=True,
        )


def row_sizes(row: dict[str, Any], task: TaskKind) -> tuple[int, ...]:
    """A training row's padded tokens per padded field: (input,), or (source, target) for seq2seq."""
    if task is TaskKind.SEQ2SEQ:
        return padded(len(row["input_ids"])), padded(len(row["labels"]))
    return (padded(len(row["input_ids"])),)


def longest_row(config: TrainConfig, data: TaskData) -> int:
    """Tokens of the longest training row as the collator pads it (a seq2seq row: the longest
    source and the longest target, which a micro-batch may pair)."""
    sizes = [row_sizes(row, config.task) for row in data.splits["train"]] or [(PAD_MULTIPLE,)]
    return sum(max(column) for column in zip(*sizes, strict=True))
