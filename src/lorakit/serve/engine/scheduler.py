"""Continuous batching for generation: requests join a running batch at the next step and leave it
the step they finish.

    submit() ──► queue ──► worker thread, each step, holding the model:
                              admit waiting requests into free rows (their prompts prefilled
                              together, adapters pinned for the request's life)
                              drop rows whose client is gone (`GenerationHandle.cancel`) or
                              whose deadline passed (DeadlineExceeded)
                              one decode step for every running row (engine/decoding.py)
                           ──► each row's text decoded (engine/detokenize.py); a row whose text
                              reached a stop string leaves the batch now
                           ──► new text streamed per row; a finished row's Future resolved at once

A short request admitted beside long ones waits for no one: it leaves as soon as it has its
tokens. Loading and unloading adapters (which take the model lock) wait at most one step.
`max_batch_size` caps the running rows; the rest wait in order of arrival (at most `max_queued`
of them: then `submit` raises QueueFull).
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from lorakit.errors import LorakitError
from lorakit.serve.engine.batcher import Request, RequestQueue
from lorakit.serve.engine.decoding import Decoder, Row
from lorakit.serve.engine.detokenize import RowText
from lorakit.serve.engine.generate import GenerateInput, Generation, eos_ids, pad_id
from lorakit.serve.engine.registry import AdapterRegistry


@dataclass(eq=False)
class _Live:
    """A request on a decoder row: its pinned adapter, and its text."""

    request: Request
    row: Row
    adapter: str | None
    output: RowText  # its text so far


class Scheduler(RequestQueue):
    """One worker thread running every generation request through one continuous `Decoder` (or
    `Seq2SeqDecoder`).

    Args:
        registry: the base model (`registry.model`, eval mode) and its adapters (pinned per request).
        tokenizer: the base model's tokenizer (prompts in, text out).
        autocast: a new autocast context (bf16, or a null context) for the decoder's forwards.
        max_batch_size: most rows running at once.
        max_positions: the model's positions, which each request must fit (`Decoder.check_fits`).
        max_queued / timeout: see `RequestQueue`; a row past its deadline leaves the batch at the
            next step and its request fails with DeadlineExceeded (text already streamed stays sent).
        decoder: the decoder class: `Decoder` for a causal LM, `Seq2SeqDecoder` for an encoder-decoder.
        prefill_tokens: about how many prompt tokens one prefill chunk computes between two decode
            steps (see `Decoder`): a long prompt delays the running rows by one chunk at a time.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        tokenizer: PreTrainedTokenizerBase,
        autocast: Callable[[], contextlib.AbstractContextManager],
        *,
        max_batch_size: int = 32,
        max_positions: int,
        max_queued: int | None = None,
        timeout: float | None = None,
        name: str = "lorakit-scheduler",
        decoder: type[Decoder] = Decoder,
        prefill_tokens: int = 512,
    ) -> None:
        if max_batch_size < 1:
            raise LorakitError(f"max_batch_size must be at least 1; got {max_batch_size}")
        super().__init__(name, max_queued=max_queued, timeout=timeout)
        self.registry = registry
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_positions = max_positions
        padding = pad_id(tokenizer, eos_ids(registry.model, tokenizer))
        self.decoder = decoder(registry.model, padding, registry.slots, autocast(), prefill_tokens=prefill_tokens)
        self._live: dict[int, _Live] = {}  # id(row) → its request
        self._start()

    def submit(self, adapter: str | None, payload: GenerateInput) -> Future:
        """Queue one prompt; its Future resolves to a `Generation` (its text also streams to
        `payload.stream` as it is generated). In `metrics()`, "batches" are decode steps and
        "batch_sizes" the rows each ran. On `close()`, the waiting requests fail and the running
        rows finish."""
        return self._enqueue(Request("generate", adapter, payload))

    def _work(self) -> None:
        stopping = False
        while not (stopping and not self._live):
            stopping = self._take(block=not self._live and not self._waiting and not stopping) or stopping
            if stopping:
                self._fail_waiting()
            try:
                self._step()
            except Exception as error:  # a bug or a crash must not stop the server: fail the rows it hit
                self._fail_running(error)
        self._fail_waiting()

    def _take(self, block: bool) -> bool:
        """Move queued requests to the waiting line (waiting for one if `block`); True once the
        stop signal was seen."""
        try:
            item = self._queue.get() if block else self._queue.get_nowait()
            while True:
                if item is None:
                    return True
                self._waiting.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return False

    def _step(self) -> None:
        """Admit, drop the abandoned and the late, decode one step, end rows at stop strings, stream
        and resolve (see the module doc)."""
        with self.registry.model_lock:
            rows = self._admit()
            finished = self.decoder.admit(rows) if rows else []
            finished += self._decode([self._live[id(row)] for row in rows])  # a first token may reach a stop string
            gone = [live for live in self._live.values() if live.request.payload.abandoned.is_set()]
            gone = [live for live in gone if not live.row.done]  # one done at admission ends as usual
            late = [live for live in self._live.values() if live not in gone and self._late(live)]
            self.decoder.drop([live.row for live in gone + late])
            if self.decoder.rows:
                self.tally.batch(len(self.decoder.rows))
            finished += self.decoder.step()
        for live in gone:
            self._end(live, error=CancelledError())
        for live in late:
            self._end(live, error=live.request.future.exception())
        finished += self._decode(list(self._live.values()))
        for live in self._live.values():
            self._stream(live)
        for row in finished:
            self._end(self._live[id(row)])

    def _late(self, live: _Live) -> bool:
        """Whether a running row is past its request's deadline (its Future then fails: see `_expired`)."""
        return not live.row.done and self._expired(live.request)

    def _decode(self, lives: list[_Live]) -> list[Row]:
        """Bring the rows' text up to date; the running ones whose text reached a stop string
        finish ("stop") and leave the batch now. Returns those."""
        stopped = []
        for live in lives:
            live.output.update(live.row)
            if live.output.stopped and not live.row.done:
                live.row.finish("stop")
                stopped.append(live.row)
        self.decoder.drop(stopped)
        return stopped

    def _admit(self) -> list[Row]:
        """Rows for waiting requests, up to the free rows; a request that cannot run fails alone,
        and the waiting ones past their deadline fail (DeadlineExceeded) without running."""
        if self.timeout is not None:
            for request in [request for request in self._waiting if request.deadline < time.monotonic()]:
                self._waiting.remove(request)
                if request.future.set_running_or_notify_cancel():
                    self._expired(request)
        rows = []
        while self._waiting and self.decoder.size + len(rows) < self.max_batch_size:
            request = self._waiting.popleft()
            if not request.future.set_running_or_notify_cancel() or self._expired(request):
                continue
            try:
                rows.append(self._row(request))
            except LorakitError as error:
                request.future.set_exception(error)
        return rows

    def _row(self, request: Request) -> Row:
        """The decoder row of `request`, its adapter pinned."""
        settings: GenerateInput = request.payload
        # As `lorakit generate`: a causal LM reads the prompt as is (a chat is rendered, with its
        # special tokens, by lorakit.inference.generation.prompt_text before it gets here); a
        # seq2seq encoder reads it with the tokenizer's special tokens (see the decoder class).
        ids = self.tokenizer(settings.prompt, add_special_tokens=self.decoder.add_special_tokens)["input_ids"]
        self.decoder.check_fits(len(ids), settings.max_new_tokens, self.max_positions)
        eos = frozenset(eos_ids(self.registry.model, self.tokenizer))  # read per request: the config may change
        sampling = {"temperature": settings.temperature, "top_p": settings.top_p, "seed": settings.seed}
        row = Row(None, ids, settings.max_new_tokens, eos, **sampling, top_logprobs=settings.top_logprobs)
        if request.adapter is not None:
            info = self.registry.pin(request.adapter)
            if info.label_names is not None:
                self.registry.unpin(request.adapter)
                raise LorakitError(f"adapter {info.name!r} is a classifier ({info.task_type}); it cannot generate text")
            row.adapter = info.model_name
        self._live[id(row)] = _Live(request, row, request.adapter, RowText(self.tokenizer, settings.stop))
        return row

    def _stream(self, live: _Live) -> None:
        """Push what of the row's text can no longer change (see engine/detokenize.py)."""
        piece = live.output.piece(done=live.row.done)
        if piece is not None:
            live.request.payload.stream.push(piece)

    def _end(self, live: _Live, error: BaseException | None = None) -> None:
        """Resolve a row that left the decoder, and unpin its adapter."""
        del self._live[id(live.row)]
        if live.adapter is not None:
            self.registry.unpin(live.adapter)
        future = live.request.future
        if error is not None:
            if not future.done():  # a late row's Future already failed (RequestQueue._expired)
                future.set_exception(error)
            return
        self._stream(live)
        row, output = live.row, live.output
        logprobs = tuple(output.logprobs) if row.top_logprobs is not None else None
        reason = "stop" if output.stopped else row.finish_reason  # a stop string reached with the last token
        generation = Generation(output.text, row.tokens, reason, prompt_tokens=len(row.prompt_ids), logprobs=logprobs)
        future.set_result(generation)

    def _fail_running(self, error: Exception) -> None:
        self.decoder.drop(self.decoder.rows + self.decoder.prefilling)
        for live in list(self._live.values()):
            self._end(live, error=error)

    def _fail_waiting(self) -> None:
        shut_down = LorakitError("the serving engine shut down before this request ran")
        while self._waiting:
            request = self._waiting.popleft()
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(shut_down)
