"""The memory planner: a run's peak memory, estimated before the model is loaded, and the
micro-batch and activation checkpointing that fit a budget.

    peak = baseline + max(loading, weights + trainable + activations + working)

    baseline     the process before the model: interpreter, libraries, tokenizer, data (measured)
    weights      the frozen base as stored: NF4 (0.516 B/value) for quantized linears, else the
                 storage dtype (bf16 where training computes in bf16, else fp32)
    trainable    LoRA (and head) parameters, their gradients and AdamW's two moments: 16 B each
    activations  what backward keeps, for the largest micro-batch (T tokens, L blocks):
                   without checkpointing  T·(L·a_block + a_other)
                   with checkpointing     T·(L·h·s + a_other)      h hidden size, s its dtype's bytes
                 or for an unchecked piece of P tokens (train/pieces.py), if that is more:
                                          m·P·(L·a_block + a_other)   m = UNCHECKED_MARGIN
    working      transient: one block's activations (its backward, or its recompute), a chunk of
                 logits, a dequantized NF4 weight
    loading      the load's own peak: the model in its load dtype plus its largest tensor

`a_block` and `a_other` (bytes per token) are measured, not modelled: a 1-block and a 2-block
copy of the architecture (same widths, same adapter, dtype, quantization and dropout) run one
forward on a probe batch while torch's saved-tensor hooks add up what backward would keep; the
difference is one block. Everything else is counted from the model built on the meta device
(no weights read). The result is checked against measured peaks in BENCHMARKS.md.

A checkpointed plan is sized for its largest micro-batch, so a `--max-memory` budget often has
room to spare on shorter ones. Where such a budget leads the planner to checkpointing (on CPU),
it also sets P to the most tokens whose unchecked activations fit that room (with
`UNCHECKED_MARGIN`): micro-batches then run as unchecked pieces of ≤ P tokens, and only rows
longer than P are checkpointed, so the recompute is paid only where the budget needs it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace

import psutil
import torch
from torch import nn
from transformers.initialization import no_init_weights

from lorakit.errors import LorakitError
from lorakit.heap import return_freed_memory
from lorakit.lora import LoraConfig, add_adapter, trainable_parameters
from lorakit.lora.targets import is_in_saved_module
from lorakit.models import MODEL_CLASSES
from lorakit.models.lm_loss import chunk_rows, chunked_causal_lm_loss, supports_chunked_loss
from lorakit.models.loading import context_length
from lorakit.quant import OUTPUT_HEADS
from lorakit.quant.nf4 import BLOCK_SIZE
from lorakit.report.humanize import format_bytes
from lorakit.train.fast_paths import use_fast_paths
from lorakit.train.pieces import PAD_MULTIPLE
from lorakit.train.precision import autocast, cast_frozen_parameters, storage_dtype

NF4_BYTES_PER_VALUE = 0.5 + 1 / BLOCK_SIZE + 4 / (BLOCK_SIZE * 256)  # codes, int8 scales, group factors
ADAMW_BYTES_PER_PARAMETER = 16  # fp32 value, gradient and two moments
PROBE_TOKENS = 64  # the probe row when no row length is given
PROBE_MAX_TOKENS = 1024  # past this SDPA runs (linear in the row) unless attention dropout is on
# Unchecked pieces (train/pieces.py) are worth it from about this size: on the benchmark CPU, pieces
# of ~190 tokens ran as fast as the whole micro-batch checkpointed, pieces of ~280 1.3–1.5× faster.
MIN_PIECE_TOKENS = 256
# Unchecked pieces make many sub-MiB tensors, which the C heap keeps once freed (lorakit/heap.py):
# over an epoch of SmolLM2-135M pieces, the resident set between steps crept up by about as much
# again as a piece's saved activations. A piece is counted at twice its activations and working.
UNCHECKED_MARGIN = 2.0


@dataclass(frozen=True)
class Setting:
    """How a step is cut: rows per micro-batch, micro-batches per step, checkpointing on or off,
    and (`piece_tokens` > 0) micro-batches run in unchecked pieces of at most that many padded
    tokens, rows longer than it checkpointed as set (train/pieces.py)."""

    micro_batch: int
    accumulation: int
    checkpointing: bool
    piece_tokens: int = 0

    def describe(self) -> str:
        """E.g. "micro-batch 4 × 4, checkpointing on", plus the pieces where there are any."""
        mode = "on" if self.checkpointing else "off"
        text = f"micro-batch {self.micro_batch} × {self.accumulation}"
        if not self.piece_tokens:
            return f"{text}, checkpointing {mode}"
        mode = "on for longer rows" if self.checkpointing else "off"
        return f"{text} in unchecked pieces of ≤ {self.piece_tokens:,} tokens, checkpointing {mode}"


@dataclass(frozen=True)
class Footprint:
    """What a model costs independent of the batch (bytes; per-token values in bytes per token)."""

    weights: int
    trainable: int
    loading: int
    layers: int
    block_per_token: int  # a_block: one block's kept activations, per token
    other_per_token: int  # a_other: embeddings, final norm, head and loss, per token
    checkpoint_per_token: int  # h·s: one block's input, what checkpointing keeps
    fixed_working: int  # logits chunk and a dequantized weight
    checkpointable: bool  # whether the architecture supports activation checkpointing
    quantized: bool = False  # the base linears are stored in NF4 already


@dataclass(frozen=True)
class PlanOptions:
    """What the planner is asked: the run's batch, precision, quantization, checkpointing
    ("auto", "on", "off"), budget in bytes (None: decide by the rule in `choose_setting`) and
    unchecked pieces (see `Setting`)."""

    micro_batch: int
    accumulation: int
    precision: str
    quantize: str | None
    checkpointing: str
    budget: int | None
    fast_dropout: bool = True
    piece_tokens: int | None = None  # None: the planner picks them for a checkpointed setting; 0: none
    shards: int = 1  # FSDP ranks the weights and optimizer state are spread over


@dataclass(frozen=True)
class MemoryEstimate:
    """One setting's estimated memory (bytes) for micro-batches of up to `tokens` tokens."""

    setting: Setting
    tokens: int
    baseline: int
    weights: int
    trainable: int
    activations: int
    working: int
    loading: int

    @property
    def peak(self) -> int:
        """The estimated peak: the larger of loading and training, over the baseline."""
        training = self.weights + self.trainable + self.activations + self.working
        return self.baseline + max(self.loading, training)

    def describe(self) -> str:
        """One line: the peak and its parts."""
        parts = (
            f"weights {format_bytes(self.weights)}, adapter+optimizer {format_bytes(self.trainable)}, "
            f"activations {format_bytes(self.activations)} for {self.tokens:,} tokens, working "
            f"{format_bytes(self.working)}, process {format_bytes(self.baseline)}"
        )
        return f"estimated peak memory {format_bytes(self.peak)} ({self.setting.describe()}; {parts})"


def estimate(footprint: Footprint, setting: Setting, row_tokens: int, baseline: int) -> MemoryEstimate:
    """The memory of `setting` when each row holds up to `row_tokens` (padded) tokens: the
    largest of what its micro-batches hold at once (a whole one, or an unchecked piece)."""
    tokens = setting.micro_batch * row_tokens
    pieces = setting.piece_tokens
    held = [] if pieces and row_tokens <= pieces else [_held(footprint, tokens, setting.checkpointing)]
    if pieces:
        size, activations, working = _held(footprint, min(pieces, tokens), checkpointing=False)
        held.append((size, int(UNCHECKED_MARGIN * activations), int(UNCHECKED_MARGIN * working)))
    tokens, activations, working = max(held, key=lambda part: part[1] + part[2])
    return MemoryEstimate(
        setting=setting,
        tokens=tokens,
        baseline=baseline,
        weights=footprint.weights,
        trainable=footprint.trainable,
        activations=activations,
        working=working,
        loading=footprint.loading,
    )


def _held(footprint: Footprint, tokens: int, checkpointing: bool) -> tuple[int, int, int]:
    """(tokens, activations, working) of one forward and backward over `tokens` tokens."""
    per_block = footprint.checkpoint_per_token if checkpointing else footprint.block_per_token
    activations = tokens * (footprint.layers * per_block + footprint.other_per_token)
    return tokens, activations, tokens * footprint.block_per_token + footprint.fixed_working


def unchecked_piece_tokens(footprint: Footprint, allowance: int) -> int:
    """The most padded tokens (a multiple of 8) whose unchecked activations and working memory,
    times `UNCHECKED_MARGIN`, fit in `allowance` bytes."""
    per_token = footprint.layers * footprint.block_per_token + footprint.other_per_token + footprint.block_per_token
    room = allowance / UNCHECKED_MARGIN - footprint.fixed_working
    return max(int(room) // max(per_token, 1), 0) // PAD_MULTIPLE * PAD_MULTIPLE


def candidate_settings(effective_batch: int, checkpointing: str, supported: bool, pieces: int = 0) -> list[Setting]:
    """Settings with the same effective batch, best first: the largest micro-batch, and at each
    size without checkpointing before with it ("on"/"off" fix it; unsupported models: off), all
    with unchecked pieces of `pieces` tokens (0: none)."""
    sizes = [m for m in range(effective_batch, 0, -1) if effective_batch % m == 0]
    modes = {"on": (True,), "off": (False,)}.get(checkpointing, (False, True))
    if not supported:
        modes = tuple(mode for mode in modes if not mode)
    return [Setting(m, effective_batch // m, mode, pieces) for m in sizes for mode in modes]


def choose_setting(
    footprint: Footprint,
    requested: Setting,
    checkpointing: str,
    supported: bool,
    row_tokens: int,
    baseline: int,
    budget: int | None,
    generative: bool,
    available: int | None = None,
    pieces: int | None = 0,
) -> MemoryEstimate:
    """The setting to train with.

    Without a budget the requested micro-batch stays; checkpointing "auto" turns on for
    generative tasks when the activations it would drop outweigh everything else (so it at least
    halves the peak), and when the memory still `available` (bytes; None: unlimited) calls for
    it, then as under a budget of that size. With `budget` (bytes), the first of
    `candidate_settings` whose estimate fits. `pieces` tokens (0: none) cut every micro-batch
    into unchecked pieces; None lets a checkpointed choice under a budget run unchecked pieces
    in the room the budget leaves, from `MIN_PIECE_TOKENS` up.

    Raises:
        LorakitError: nothing fits the budget; the message names the smallest setting's need.
    """
    effective = requested.micro_batch * requested.accumulation
    requested = replace(requested, piece_tokens=pieces or 0)
    if budget is None:
        plain = estimate(footprint, replace(requested, checkpointing=False), row_tokens, baseline)
        if checkpointing == "off" or not supported:
            return plain
        checked = estimate(footprint, replace(requested, checkpointing=True), row_tokens, baseline)
        if checkpointing == "on" or (generative and plain.activations > plain.peak - plain.activations):
            return checked
        if available is None or plain.peak <= available:
            return plain
        budget = available
    candidates = candidate_settings(effective, checkpointing, supported, pieces or 0)
    options = [estimate(footprint, s, row_tokens, baseline) for s in candidates]
    for option in options:
        if option.peak <= budget:
            room = budget - option.baseline - option.weights - option.trainable
            return _with_pieces(footprint, option, row_tokens, room, pieces)
    smallest = min(options, key=lambda option: (option.peak, option.activations))
    loading = f", loading the model alone {format_bytes(smallest.baseline + smallest.loading)}"
    raise LorakitError(
        f"a memory budget of {format_bytes(budget)} cannot fit this run: the smallest setting "
        f"({smallest.setting.describe()}) needs about {format_bytes(smallest.peak)}"
        f"{loading if smallest.loading >= smallest.peak - smallest.baseline else ''}; raise --max-memory"
        f"{', lower --max-length' if smallest.activations else ''}"
        f"{'' if footprint.quantized else ', or add --quantize nf4'}"
    )


def _with_pieces(
    footprint: Footprint, option: MemoryEstimate, row_tokens: int, allowance: int, pieces: int | None
) -> MemoryEstimate:
    """`option`, with unchecked pieces as large as `allowance` bytes of activations and working
    memory hold when the planner picks them (`pieces` None) for a checkpointed setting."""
    if pieces is not None or not option.setting.checkpointing:
        return option
    size = unchecked_piece_tokens(footprint, allowance)
    if size < MIN_PIECE_TOKENS:
        return option
    return estimate(footprint, replace(option.setting, piece_tokens=size), row_tokens, option.baseline)


def available_memory(device_type: str = "cpu") -> int:
    """Memory this process could still take: free GPU memory on CUDA, else the OS's available RAM."""
    if device_type == "cuda":
        return int(torch.cuda.mem_get_info()[0])
    return int(psutil.virtual_memory().available)


def process_memory(device_type: str = "cpu") -> int:
    """What the process holds now: allocated GPU memory on CUDA, else its resident set."""
    if device_type == "cuda":
        return int(torch.cuda.memory_allocated())
    return int(psutil.Process().memory_info().rss)


def model_footprint(
    model_config: object,
    peft_type: str,
    lora: LoraConfig | None,
    precision: str,
    quantize: str | None,
    fast_dropout: bool = True,
    row_tokens: int = PROBE_TOKENS,
) -> Footprint:
    """Count `model_config`'s weights and trainable state, and measure its activations per token
    (see the module docstring) on a probe row of `row_tokens` (up to `PROBE_MAX_TOKENS`): short
    rows attend with matmuls (train/attention.py), which keep a (length × length) score matrix
    per head, so what a token costs depends on the row. `lora` None trains every weight."""
    meta = _meta_model(model_config, peft_type, lora)
    weights, loading = _weight_bytes(meta, precision, quantize, direct=peft_type != "SEQ_CLS")
    trainable, _ = trainable_parameters(meta)
    tokens = max(min(row_tokens, context_length(model_config) or row_tokens, PROBE_MAX_TOKENS), 1)
    probe = _Probe(model_config, peft_type, lora, precision, fast_dropout, tokens)
    one, two = probe.saved_bytes(1), probe.saved_bytes(2)
    return_freed_memory()  # the probe models' pages
    block = max(two - one, 0) // tokens
    hidden = int(getattr(model_config, "hidden_size", 0) or 0)
    element = 4 if precision == "fp32" else 2
    vocab = int(getattr(model_config, "vocab_size", 0) or 0)
    logits_chunk = 3 * 4 * chunk_rows(vocab) * vocab if peft_type == "CAUSAL_LM" and vocab else 0
    return Footprint(
        weights=weights,
        trainable=trainable * ADAMW_BYTES_PER_PARAMETER,
        loading=loading,
        layers=_layer_count(model_config),
        block_per_token=block,
        other_per_token=max(one - block * tokens, 0) // tokens,
        checkpoint_per_token=hidden * element,
        fixed_working=logits_chunk + (2 * _largest_linear(meta) * element if quantize else 0),
        checkpointable=bool(getattr(meta, "supports_gradient_checkpointing", False)),
        quantized=quantize is not None,
    )


def sharded(footprint: Footprint, shards: int) -> Footprint:
    """One rank's share under FSDP: 1/N of the stored weights and of the trainable state, plus
    two blocks' weights gathered whole (the one computing and the next, prefetched). Loading is
    left whole: the plan is the main process's, which reads the whole checkpoint and hands the
    others their slices (train/sharding.py); a 4-bit base is loaded whole by every process."""
    block = footprint.weights // max(footprint.layers, 1)
    return replace(
        footprint,
        weights=footprint.weights // shards + 2 * block,
        trainable=footprint.trainable // shards,
    )


def _meta_model(model_config: object, peft_type: str, lora: LoraConfig | None) -> nn.Module:
    """The model (with its adapter) on the meta device: shapes without memory."""
    with torch.device("meta"):
        model = MODEL_CLASSES[peft_type].from_config(copy.deepcopy(model_config))
        if lora is not None:
            add_adapter(model, lora)
    if lora is None:
        model.requires_grad_(True)
    return model


def _weight_bytes(model: nn.Module, precision: str, quantize: str | None, direct: bool) -> tuple[int, int]:
    """(stored frozen weights, the load's peak) in bytes. Generative bases load `direct`ly in
    their storage dtype; a classifier loads in fp32 (its new head trains) and is cast after;
    NF4 linears are quantized as they load, the rest in fp32."""
    quantized = _quantized_weights(model) if quantize else set()
    storage = 4 if precision == "fp32" else 2
    stored = loaded = largest = 0
    for parameter in model.parameters():  # tied weights come once
        if parameter.requires_grad:
            loaded += 4 * parameter.numel()
            continue
        size = NF4_BYTES_PER_VALUE if id(parameter) in quantized else storage
        stored += int(size * parameter.numel())
        largest = max(largest, 4 * parameter.numel())
        if id(parameter) in quantized or (direct and not quantize):
            loaded += int(size * parameter.numel())
        else:
            loaded += 4 * parameter.numel()
    return stored, loaded + largest


def _quantized_weights(model: nn.Module) -> set[int]:
    """ids of the weights `quantize_model` would store in NF4."""
    chosen = set()
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", module)
        if (
            type(base) is nn.Linear
            and not is_in_saved_module(name, OUTPUT_HEADS)
            and base.weight.numel() % BLOCK_SIZE == 0
        ):
            chosen.add(id(base.weight))
    return chosen


def _largest_linear(model: nn.Module) -> int:
    return max((m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear)), default=0)


def _layer_count(model_config: object) -> int:
    """Blocks as the probe counts them: an encoder-decoder's probe grows both stacks by one, so
    one "block" is an encoder and a decoder layer together."""
    return int(getattr(model_config, "num_hidden_layers", 0) or 0)


@dataclass
class _Probe:
    """Builds 1- and 2-block copies of an architecture and measures what backward keeps."""

    model_config: object
    peft_type: str
    lora: LoraConfig | None
    precision: str
    fast_dropout: bool
    tokens: int  # the probe row's length: the run's longest row, within the model's context

    def saved_bytes(self, layers: int) -> int:
        """Bytes of the tensors saved for backward by one forward of a `tokens`-token row."""
        model = self._model(layers)
        batch = self._batch()
        # NF4 weights (a tensor subclass without one storage) are never saved for backward.
        parameters = {p.untyped_storage().data_ptr() for p in model.parameters() if type(p.data) is torch.Tensor}
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in parameters:
                seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
            return tensor

        with autocast(self.precision, torch.device("cpu")), torch.autograd.graph.saved_tensors_hooks(pack, _same):
            self._loss(model)(model, batch)
        return sum(seen.values())

    def _model(self, layers: int) -> nn.Module:
        """A `layers`-block copy with constant weights (their values do not change what is saved;
        random initialisation of a wide block would cost seconds). An NF4 base saves the same
        tensors as a frozen full-precision one (neither keeps its input for a weight gradient),
        so the probe does not quantize."""
        small = copy.deepcopy(self.model_config)
        small.num_hidden_layers = layers
        if getattr(small, "num_decoder_layers", None):
            small.num_decoder_layers = layers
        small.use_cache = False
        with no_init_weights():  # built in the storage dtype: the probe's own memory stays small
            model = MODEL_CLASSES[self.peft_type].from_config(small, dtype=storage_dtype(self.precision))
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.fill_(0.02)
        if self.lora is not None:
            add_adapter(model, self.lora)
        cast_frozen_parameters(model, self.precision)
        use_fast_paths(model, self.fast_dropout)
        return model.train()

    def _batch(self) -> dict[str, torch.Tensor]:
        vocab = int(getattr(self.model_config, "vocab_size", 2) or 2)
        ids = torch.randint(1, max(vocab, 2), (1, self.tokens), generator=torch.Generator().manual_seed(0))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.peft_type == "SEQ_CLS":
            batch["labels"] = torch.zeros(1, dtype=torch.long)
        else:
            batch["labels"] = ids.clone()
        return batch

    def _loss(self, model: nn.Module) -> Callable[[nn.Module, dict], torch.Tensor]:
        if self.peft_type == "CAUSAL_LM" and supports_chunked_loss(model):
            return chunked_causal_lm_loss
        return lambda m, batch: m(**batch).loss


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def plan_run(
    model_config: object,
    peft_type: str,
    lora: LoraConfig | None,
    options: PlanOptions,
    row_tokens: int,
    device_type: str = "cpu",
) -> MemoryEstimate:
    """The estimate (and setting) a training run goes with: see `choose_setting`. `row_tokens` is
    the longest training row, padded as the collator pads it.

    Raises:
        LorakitError: checkpointing "on" for a model without support; a budget nothing fits.
    """
    baseline = process_memory(device_type)
    with torch.random.fork_rng(devices=[]):  # building probe models must not move the run's seed
        footprint = model_footprint(
            model_config, peft_type, lora, options.precision, options.quantize, options.fast_dropout, row_tokens
        )
    if options.shards > 1:
        footprint = sharded(footprint, options.shards)
    supported = footprint.checkpointable
    if options.checkpointing == "on" and not supported:
        raise LorakitError(
            f"{getattr(model_config, 'model_type', 'this model')} models do not support activation checkpointing; "
            "run with --gradient-checkpointing off (and a smaller --batch-size if memory is short)"
        )
    requested = Setting(options.micro_batch, options.accumulation, options.checkpointing == "on")
    pieces = options.piece_tokens
    if pieces is None and (options.budget is None or options.checkpointing != "auto" or device_type != "cpu"):
        # Pieces spend a budget's spare room; forced checkpointing means every micro-batch; on
        # CUDA small pieces were never measured.
        pieces = 0
    return choose_setting(
        footprint,
        requested,
        options.checkpointing,
        supported,
        row_tokens,
        baseline,
        options.budget,
        generative=peft_type != "SEQ_CLS",
        available=available_memory(device_type) + baseline,  # the baseline is resident already
        pieces=pieces,
    )
