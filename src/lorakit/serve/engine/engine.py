"""The serving engine: one base model, its adapter registry, and the worker that runs requests.

    HTTP handler ──► engine.submit_classify ──► Batcher queue ──► worker: registry.hold(adapters),
                                                                  run_classification (one mixed-
                                                                  adapter forward per batch)
                 ──► engine.submit_generate ──► Scheduler ──► worker: continuous batching, rows
                                                             joining and leaving between decode steps
                                                             (a causal LM's `Decoder`, or an encoder-
                                                             decoder's `Seq2SeqDecoder`)
    Future / TokenStream ◄── results, per request

Settings are checked when a request is submitted (a LorakitError raised at once); an unknown or
unfit adapter, or an input that is too long, fails that request's Future only. A classification
base whose checkpoint holds no trained head (`needs_adapter`) classifies only through adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from lorakit.errors import LorakitError
from lorakit.models import infer_task_type, load_model, load_tokenizer
from lorakit.models.loading import load_config
from lorakit.serve.engine.adapters import check_name
from lorakit.serve.engine.batch import Batch
from lorakit.serve.engine.batcher import Batcher, Request
from lorakit.serve.engine.classify import ClassifyInput, run_classification, untrained_head
from lorakit.serve.engine.decoding import Decoder
from lorakit.serve.engine.generate import GenerateInput, Generation, GenerationHandle
from lorakit.serve.engine.registry import DEFAULT_MAX_BYTES, AdapterRegistry
from lorakit.serve.engine.scheduler import Scheduler
from lorakit.serve.engine.seq2seq_decoding import Seq2SeqDecoder
from lorakit.task_kind import TaskKind

SERVED_KINDS = (TaskKind.CLASSIFICATION, TaskKind.CAUSAL_LM, TaskKind.SEQ2SEQ)
logger = logging.getLogger("lorakit.serve")


class Engine:
    """Serve one base model's adapters: batched, mixed-adapter classification or generation.

    Args:
        registry: the base model (`registry.model`) and its adapters; its `kind` (CLASSIFICATION,
            CAUSAL_LM or SEQ2SEQ) decides what the engine serves.
        tokenizer: the base model's tokenizer.
        max_batch_size / max_wait_ms: classification batching (see `Batcher`); for generation,
            max_batch_size caps the rows decoding at once (see `Scheduler`).
        max_input_tokens: longest classification input (default: the model's position limit).
        bf16: run forward passes under bfloat16 autocast (about 2× faster on a CPU with AVX-512 bf16).
        max_queued: most rows waiting to run; past it `submit_*` raises QueueFull (None: no bound).
        request_timeout: seconds a request may take from submit to result, else it fails with
            DeadlineExceeded (None: no limit).
        prefill_tokens: generation: about how many prompt tokens one prefill chunk computes
            between two decode steps (a long prompt never stalls the running rows for longer).
        needs_adapter: the base alone cannot answer (a classifier whose head was not trained, see
            `untrained_head`), so every request must name an adapter.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_input_tokens: int | None = None,
        bf16: bool = False,
        max_queued: int | None = None,
        request_timeout: float | None = None,
        needs_adapter: bool = False,
        prefill_tokens: int = 512,
    ) -> None:
        self.kind = _served_kind(getattr(registry.kind, "peft_type", None))
        self.model = registry.model.eval()
        self.tokenizer = tokenizer
        self.registry = registry
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.max_input_tokens = max_input_tokens or self.max_positions
        self.bf16 = bf16
        self.needs_adapter = needs_adapter
        self.batcher: Batcher | Scheduler
        bounds = {"max_batch_size": max_batch_size, "max_queued": max_queued, "timeout": request_timeout}
        if self.kind is TaskKind.CLASSIFICATION:
            self.batcher = Batcher(self._run_batch, max_wait_ms=max_wait_ms, **bounds)
        else:  # max_wait_ms does not apply: a request joins the running batch at the next step
            decoder = Seq2SeqDecoder if self.kind is TaskKind.SEQ2SEQ else Decoder
            self.batcher = Scheduler(
                registry,
                tokenizer,
                self._autocast,
                max_positions=self.max_positions,
                decoder=decoder,
                prefill_tokens=prefill_tokens,
                **bounds,
            )

    def submit_classify(self, adapter: str | None, text: str, text_pair: str | None = None) -> Future:
        """Queue one text (pair); the Future gives `{"label", "probability", "probabilities"}`."""
        self._check_kind("classify", TaskKind.CLASSIFICATION)
        if not isinstance(text, str) or (text_pair is not None and not isinstance(text_pair, str)):
            raise LorakitError("text (and text_pair, if given) must be strings")
        if adapter is None and self.needs_adapter:
            raise LorakitError(
                f"the base model {self.registry.base_model!r} has no trained classifier head (its checkpoint "
                "holds none); name an adapter trained on it"
            )
        return self.batcher.submit(("classify",), _adapter_name(adapter), ClassifyInput(text, text_pair))

    def submit_generate(
        self,
        adapter: str | None,
        prompt: str,
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | Sequence[str] = (),
        top_logprobs: int | None = None,
    ) -> GenerationHandle:
        """Queue one prompt (a seq2seq model's encoder input); the handle's Future gives a
        `Generation`, its `stream` the text as it is generated, in `Piece`s (iterate it, or `async
        for`). temperature 0: greedy; `seed` makes sampling reproducible, whatever else shares the
        batch; the text ends before the first `stop` string; `top_logprobs` (0..20) adds each
        token's log-probability and its likeliest alternatives' (see `GenerateInput`)."""
        self._check_kind("generate", TaskKind.CAUSAL_LM, TaskKind.SEQ2SEQ)
        if not isinstance(prompt, str):
            raise LorakitError("prompt must be a string")
        stops = (stop,) if isinstance(stop, str) else tuple(stop)
        payload = GenerateInput(prompt, max_new_tokens, temperature, top_p, seed, stops, top_logprobs)
        future = self.batcher.submit(_adapter_name(adapter), payload)
        return GenerationHandle(future, payload.stream, payload.abandoned)

    async def classify(self, adapter: str | None, text: str, text_pair: str | None = None) -> dict:
        """`submit_classify`, awaited."""
        return await asyncio.wrap_future(self.submit_classify(adapter, text, text_pair))

    async def generate(self, adapter: str | None, prompt: str, **sampling: Any) -> Generation:
        """`submit_generate`, awaited (for streaming, use `submit_generate(...).stream`).

        sampling: `submit_generate`'s keywords (max_new_tokens, temperature, top_p, seed, stop, top_logprobs).
        """
        return await asyncio.wrap_future(self.submit_generate(adapter, prompt, **sampling).future)

    @property
    def task_type(self) -> str:
        """PEFT's name for `kind` ("SEQ_CLS", "CAUSAL_LM", "SEQ_2_SEQ_LM"): what /health, /v1/models
        and the CLI report."""
        return self.kind.peft_type

    def metrics(self) -> dict:
        """{"batcher": Batcher.metrics(), "adapters": AdapterRegistry.stats()}."""
        return {"batcher": self.batcher.metrics(), "adapters": self.registry.stats()}

    def close(self) -> None:
        """Finish the running batch, fail queued requests, stop the worker."""
        self.batcher.close()

    def __enter__(self) -> Engine:
        """The engine itself; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """`close()`."""
        self.close()

    def _check_kind(self, verb: str, *kinds: TaskKind) -> None:
        if self.kind not in kinds:
            raise LorakitError(f"this server runs a {self.task_type} model, which cannot {verb}")

    def _autocast(self) -> contextlib.AbstractContextManager:
        device = next(self.model.parameters()).device
        return torch.autocast(device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()

    def _run_batch(self, requests: list[Request]) -> None:
        with self.registry.hold(request.adapter for request in requests) as held:
            batch = Batch(self.model, self.tokenizer, held, self._autocast(), self.registry.slots)
            run_classification(batch, requests, self.max_input_tokens)


def load_engine(
    base_model: str,
    *,
    task_type: str | None = None,
    adapters_dir: str | Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    num_labels: int | None = None,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    max_input_tokens: int | None = None,
    bf16: bool = False,
    max_queued: int | None = None,
    request_timeout: float | None = None,
    prefill_tokens: int = 512,
) -> Engine:
    """Load `base_model` (packaged name, folder or Hub id) and its tokenizer, and start an Engine.

    task_type: PEFT's SEQ_CLS, CAUSAL_LM or SEQ_2_SEQ_LM (default: inferred from the architecture); num_labels: the
    base's own head width (adapters bring their own heads); the rest: see `AdapterRegistry` and `Engine`.
    A classification base whose checkpoint holds no trained head (`untrained_head`) is served with
    `needs_adapter` (and a logged warning naming the missing weights).
    """
    kind = _served_kind(task_type or infer_task_type(load_config(base_model)))
    model = load_model(base_model, kind.peft_type, num_labels=num_labels).eval()
    untrained = untrained_head(model) if kind is TaskKind.CLASSIFICATION else []
    if untrained:
        logger.warning(
            "the base model %r has no trained classifier head (%s not in its checkpoint): requests must name "
            "an adapter",
            base_model,
            ", ".join(untrained),
        )
    tokenizer = load_tokenizer(base_model)
    registry = AdapterRegistry(
        model,
        base_model,
        adapters_dir=adapters_dir,
        max_bytes=max_bytes,
        kind=kind,
        pack_dtype=torch.bfloat16 if bf16 else None,  # the dtype the batches' autocast computes in
    )
    return Engine(
        registry,
        tokenizer,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        max_input_tokens=max_input_tokens,
        bf16=bf16,
        max_queued=max_queued,
        request_timeout=request_timeout,
        needs_adapter=bool(untrained),
        prefill_tokens=prefill_tokens,
    )


def _served_kind(task_type: str | None) -> TaskKind:
    """The served kind whose PEFT task_type this is; a LorakitError naming the served ones otherwise."""
    kind = TaskKind.from_peft_type(task_type)
    if kind not in SERVED_KINDS:
        served = " or ".join(kind.peft_type for kind in SERVED_KINDS)
        raise LorakitError(f"the engine serves task_type {served}; got {task_type!r}")
    return kind


def _adapter_name(adapter: str | None) -> str | None:
    return None if adapter is None else check_name(adapter)
