"""Text generation with a trained causal-LM or seq2seq adapter (or a merged/full model folder).

    generator = load_trained_generator("runs/chatterbot-lora")
    generate_batch(generator.model, generator.tokenizer, [prompt_text(tok, messages, generator.kind)], 64)

A causal LM continues the prompt rendered with the tokenizer's chat template (ending in the
assistant header), exactly as training rendered it; a seq2seq model reads the prompt as its
encoder input. Decoding is greedy unless a temperature > 0 asks for sampling.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.artifacts import find_artifact_folder, load_adapted_model, read_adapter_artifact, read_artifact_info
from lorakit.data.chat import generation_prompt, plain_prompt
from lorakit.errors import LorakitError
from lorakit.models import load_model, load_tokenizer
from lorakit.models.lm_loss import chunked_causal_lm_loss_sum, supports_chunked_loss
from lorakit.models.loading import load_config
from lorakit.task_kind import TaskKind


@dataclass
class TrainedGenerator:
    """A generator ready to run: model (eval mode), tokenizer and the run's facts."""

    model: nn.Module
    tokenizer: Any
    kind: TaskKind  # CAUSAL_LM or SEQ2SEQ
    folder: Path
    system_prompt: str | None = None
    max_new_tokens: int = 64


def prompt_text(tokenizer: Any, messages: Sequence[dict[str, str]], kind: TaskKind) -> str:
    """What a `kind` model reads for `messages` (a conversation without its answer), rendered
    exactly as training rendered the prompt part of its examples."""
    if kind == TaskKind.SEQ2SEQ:
        return plain_prompt(list(messages))
    return generation_prompt(tokenizer, list(messages))


def user_messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """One user turn, after the run's system prompt when it had one."""
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": prompt}]


@torch.no_grad()
def generate_batch(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    seq2seq: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    streamer: Any = None,
) -> list[str]:
    """Continue each prompt (batched, left-padded for causal LMs); returns only the new text.

    temperature 0 → greedy; > 0 → sampling with that temperature, top_p and top_k (0 = off).
    `streamer` (a transformers streamer) receives tokens as they come; it needs one prompt.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "right" if seq2seq else "left"
    try:
        # The rendered chat text already holds its special tokens; only seq2seq adds its own (eos).
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=seq2seq).to(device)
    finally:
        tokenizer.padding_side = side
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    output = model.generate(
        **batch, max_new_tokens=max_new_tokens, pad_token_id=pad_id, streamer=streamer, use_cache=True, **sampling
    )
    model.train(was_training)
    new_tokens = output if seq2seq else output[:, batch["input_ids"].shape[1] :]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def labelled_logits(
    model: nn.Module, batch: dict[str, torch.Tensor], shift_labels: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits at the labelled positions only, and their labels: `(n, vocab)` and `(n,)`.

    Causal LMs predict token t+1 at position t. Only positions whose next token is labelled (the
    responses) go through the LM head, via transformers' boolean `logits_to_keep`: with prompts
    unlabelled that skips most of the (batch, length, vocab) logits — SmolLM2's vocabulary is
    49,152 wide — in memory and in compute. A model without `logits_to_keep` computes them all.
    A seq2seq decoder's logits are aligned with its labels already (decoder inputs = labels
    shifted right).
    """
    labels = batch["labels"]
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    if not shift_labels:
        core = getattr(model, "module", model)  # under DDP
        inputs["decoder_input_ids"] = core.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(**inputs).logits
        return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    next_labels = nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    keep = next_labels != -100
    if "logits_to_keep" in inspect.signature(getattr(model, "module", model).forward).parameters:
        return model(**inputs, logits_to_keep=keep).logits, next_labels[keep]
    logits = model(**inputs).logits
    return logits[keep], next_labels[keep]


@torch.no_grad()
def response_loss(
    model: nn.Module,
    rows: Sequence[dict[str, Any]],
    collate: Any,
    batch_size: int,
    shift_labels: bool,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[float, int]:
    """Summed cross-entropy over the labelled (response) tokens of `rows`, and how many there are.
    Mean loss = sum / tokens; perplexity = exp(mean loss)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = {key: value.to(device) for key, value in collate(rows[start : start + batch_size]).items()}
        with autocast or contextlib.nullcontext():
            if shift_labels and supports_chunked_loss(model):  # no (tokens × vocab) logits at once
                total, count = chunked_causal_lm_loss_sum(model, batch)
                loss_sum, tokens = loss_sum + total.item(), tokens + count
                continue
            logits, labels = labelled_logits(model, batch, shift_labels)
        loss_sum += nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum").item()
        tokens += int((labels != -100).sum())
    model.train(was_training)
    return loss_sum, tokens


def perplexity(mean_loss: float) -> float:
    """exp(mean cross-entropy); inf where that overflows."""
    return math.exp(mean_loss) if mean_loss < 50 else float("inf")


def load_trained_generator(path: str | Path, device: torch.device | str = "cpu") -> TrainedGenerator:
    """Load what `lorakit train --task causal-lm|seq2seq` wrote (a run folder or its adapter/ or
    model/), any PEFT CAUSAL_LM / SEQ_2_SEQ_LM adapter folder, or a merged model folder.

    Raises:
        LorakitError: the folder holds no generative adapter or model, or its model, base model or
            tokenizer cannot be loaded.
    """
    folder = find_artifact_folder(Path(path))
    info = read_artifact_info(folder)
    if (folder / "adapter_config.json").is_file():
        artifact = read_adapter_artifact(folder)
        kind = artifact.kind
        if kind is None or not kind.generates:
            raise LorakitError(
                f"{folder} holds a {artifact.task_type} adapter, not a causal-lm or seq2seq one; "
                "use lorakit predict for classification adapters"
            )
        model = load_adapted_model(artifact)
        tokenizer = load_tokenizer(artifact.base_model)
    elif (folder / "config.json").is_file():
        encoder_decoder = load_config(str(folder)).is_encoder_decoder
        kind = info.task or (TaskKind.SEQ2SEQ if encoder_decoder else TaskKind.CAUSAL_LM)
        if not kind.generates:
            raise LorakitError(f"{folder} holds a {kind} model; use lorakit predict for classifiers")
        model = load_model(str(folder), kind.peft_type)
        tokenizer = load_tokenizer(str(folder))
    else:
        raise LorakitError(f"{path} holds no adapter (adapter_config.json) or model (config.json)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return TrainedGenerator(model, tokenizer, kind, folder, info.system_prompt, info.max_new_tokens or 64)
