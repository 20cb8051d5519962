"""Classification batches: tokenize with padding, one mixed forward, softmax per row over its own labels;
and whether the base model's own head was trained (`untrained_head`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import AdapterInfo
from lorakit.serve.engine.batch import Batch
from lorakit.serve.engine.batcher import Request


@dataclass(frozen=True)
class ClassifyInput:
    """One row to classify: a text, and the second text of a pair (None: a single text)."""

    text: str
    text_pair: str | None = None


def run_classification(batch: Batch, requests: list[Request], max_input_tokens: int) -> None:
    """Classify one batch; each request's Future gets `{"label", "probability", "probabilities"}`
    (as `lorakit predict`), or its own error.

    A text is truncated to its adapter's training max_length when lorakit.json records it (as
    `lorakit predict` does); otherwise a text longer than `max_input_tokens` fails.
    """
    rows: list[tuple[Request, AdapterInfo | None, tuple[str, ...]]] = []
    encoded = []
    for request in requests:
        try:
            info = _classifier(batch, request)
            encoded.append(_encode(batch.tokenizer, request.payload, info, max_input_tokens))
        except LorakitError as error:
            request.future.set_exception(error)
            continue
        labels = info.label_names if info is not None else _base_labels(batch.model)
        rows.append((request, info, labels))
    if not rows:
        return
    inputs = batch.tokenizer.pad(encoded, padding=True, return_tensors="pt").to(batch.device)
    with batch.forward([info for _, info, _ in rows]):
        logits = batch.model(**inputs).logits.float()
    for i, (request, _, labels) in enumerate(rows):
        probabilities = torch.softmax(logits[i, : len(labels)], dim=-1).tolist()
        best = max(range(len(labels)), key=probabilities.__getitem__)
        request.future.set_result(
            {
                "label": labels[best],
                "probability": probabilities[best],
                "probabilities": dict(zip(labels, probabilities, strict=True)),
            }
        )


def _classifier(batch: Batch, request: Request) -> AdapterInfo | None:
    """The request's adapter, refused unless it is a classifier."""
    info = batch.adapter_of(request)
    if info is not None and info.label_names is None:
        raise LorakitError(f"adapter {info.name!r} is a {info.task_type} adapter, not a classifier")
    return info


def _encode(tokenizer, payload: ClassifyInput, info: AdapterInfo | None, max_input_tokens: int) -> dict:
    if info is not None and info.max_length:
        limit = min(info.max_length, max_input_tokens)
        return tokenizer(payload.text, payload.text_pair, truncation=True, max_length=limit)
    encoded = tokenizer(payload.text, payload.text_pair)
    if len(encoded["input_ids"]) > max_input_tokens:
        raise LorakitError(
            f"the input is {len(encoded['input_ids'])} tokens; this server takes at most {max_input_tokens}"
        )
    return encoded


def _base_labels(model: nn.Module) -> tuple[str, ...]:
    id2label = model.config.id2label
    return tuple(str(id2label[i]) for i in range(len(id2label)))


def untrained_head(model: nn.Module) -> list[str]:
    """The names of the head's parameters (those outside `model.base_model`) that the checkpoint did
    not hold, so that loading initialised them at random: a published encoder (a sentence
    transformer) loaded as a classifier has a head, but no trained one. Empty when the head was
    read from the checkpoint, and for a model built rather than loaded (nothing tells).

    transformers marks every parameter it reads from a checkpoint `_is_hf_initialized`.
    """
    parameters = list(model.named_parameters())
    read = {id(parameter) for _, parameter in parameters if getattr(parameter, "_is_hf_initialized", False)}
    if not read:
        return []
    body = {id(parameter) for parameter in model.base_model.parameters()}
    return [name for name, parameter in parameters if id(parameter) not in body and id(parameter) not in read]
