"""Dynamic batching: requests queue up, one worker thread runs them in batches, futures carry results.

    submit() ──► queue ──► worker: take the oldest request, then more with the same batch key until
                           max_batch_size rows or max_wait_ms after the oldest arrived ──► run_batch
                           ──► every request's Future resolved (result or its own error)

Requests with another key (e.g. other sampling settings) wait, in order, for a later batch. A
request whose Future was cancelled before its batch starts is skipped. If `run_batch` raises,
the requests it left unresolved fail with that error and the worker goes on with the next batch.
Futures are `concurrent.futures.Future`: `asyncio.wrap_future(future)` awaits one.
`RequestQueue` is what the batcher shares with the generation scheduler (engine/scheduler.py):
the queue and its bound (`QueueFull` past `max_queued` waiting rows), each request's deadline
(`DeadlineExceeded` past `timeout` seconds), its counters, and shutting down.
"""

from __future__ import annotations

import collections
import math
import queue
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from lorakit.errors import LorakitError
from lorakit.serve.engine.overload import DeadlineExceeded, QueueFull
from lorakit.serve.engine.tally import Tally

_MAX_RETRY_AFTER_S = 60


@dataclass
class Request:
    """One queued request: rows with equal `key` may share a batch; `adapter` None means the base.
    `deadline`: the `time.monotonic()` past which it fails with DeadlineExceeded (None: never)."""

    key: Hashable
    adapter: str | None
    payload: Any
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.monotonic)
    deadline: float | None = None


class RequestQueue:
    """Requests queued for one worker thread (a subclass's `_work`), their counters, shutting down.

    `_queue` holds submitted requests (None: the stop signal); `_waiting`, those the worker took
    but has not run yet. A subclass sets its own fields, then calls `_start()`.

    max_queued: most rows waiting (queued, not yet running) before `submit` raises QueueFull
    (None: unbounded). timeout: seconds a request may take from submit to result before it fails
    with DeadlineExceeded (None: no limit); the subclass checks deadlines with `_expired`.
    """

    def __init__(self, name: str, *, max_queued: int | None = None, timeout: float | None = None) -> None:
        if max_queued is not None and max_queued < 1:
            raise LorakitError(f"max_queued must be at least 1; got {max_queued}")
        if timeout is not None and not timeout > 0:
            raise LorakitError(f"the request timeout must be more than 0 seconds; got {timeout}")
        self._queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self._waiting: collections.deque[Request] = collections.deque()
        self._closed = False
        self._lock = threading.Lock()
        self.max_queued = max_queued
        self.timeout = timeout
        self.tally = Tally()
        self._worker = threading.Thread(target=self._work, name=name, daemon=True)

    def _start(self) -> None:
        self._worker.start()

    def _work(self) -> None:
        raise NotImplementedError

    def _enqueue(self, request: Request) -> Future:
        """Queue `request` (refused once closed, or with QueueFull when `max_queued` rows wait);
        its Future, counted when it ends."""
        with self._lock:
            if self._closed:
                raise LorakitError("the serving engine is shut down; start a new one")
            if self.max_queued is not None and self._queued() >= self.max_queued:
                self.tally.refused()
                raise QueueFull(self.max_queued, self._retry_after())
            if self.timeout is not None:
                request.deadline = request.submitted + self.timeout
            self.tally.submitted()
            request.future.add_done_callback(lambda future: self.tally.finished(request.submitted, future))
            self._queue.put(request)
        return request.future

    def _expired(self, request: Request) -> bool:
        """Whether `request` (running: its Future set running) is past its deadline; if so, it fails
        with DeadlineExceeded here (the caller drops it)."""
        if request.deadline is None or time.monotonic() <= request.deadline:
            return False
        if not request.future.done():
            request.future.set_exception(DeadlineExceeded(self.timeout))
        return True

    def _queued(self) -> int:
        """Rows submitted and not running yet."""
        return self._queue.qsize() + len(self._waiting)

    def _retry_after(self) -> int:
        """Whole seconds a refused client should wait: the median request's time, 1 to 60."""
        median = self.tally.metrics(queued=0)["latency_s"]["p50"] or 1.0
        return min(max(math.ceil(median), 1), _MAX_RETRY_AFTER_S)

    def metrics(self) -> dict:
        """`Tally.metrics`: counters by outcome, batches and their sizes, queued rows, latency."""
        return self.tally.metrics(queued=self._queued())

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests and join the worker (what it finishes first: see the subclass)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._worker.join(timeout)


class Batcher(RequestQueue):
    """Queue + one worker thread calling `run_batch(requests)`, which must resolve every future.

    Args:
        run_batch: runs one batch (1..max_batch_size requests with one key) in the worker thread.
        max_batch_size: most requests (rows) per batch.
        max_wait_ms: how long the oldest request may wait for others to join its batch.
        max_queued / timeout: see `RequestQueue` (a request past its deadline when its batch
            starts fails instead of running).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Request]], None],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queued: int | None = None,
        timeout: float | None = None,
        name: str = "lorakit-batcher",
    ) -> None:
        if max_batch_size < 1:
            raise LorakitError(f"max_batch_size must be at least 1; got {max_batch_size}")
        if max_wait_ms < 0:
            raise LorakitError(f"max_wait_ms must be 0 or more; got {max_wait_ms}")
        super().__init__(name, max_queued=max_queued, timeout=timeout)
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self._start()

    def submit(self, key: Hashable, adapter: str | None, payload: Any) -> Future:
        """Queue one request; its Future resolves to what `run_batch` sets. On `close()`, the batch
        being formed or run finishes and the queued requests fail."""
        return self._enqueue(Request(key, adapter, payload))

    def _work(self) -> None:
        while True:
            first = self._waiting.popleft() if self._waiting else self._queue.get()
            if first is None or self._closed:
                if first is not None:
                    self._waiting.appendleft(first)
                break
            batch, stopping = self._collect(first)
            batch = [r for r in batch if r.future.set_running_or_notify_cancel() and not self._expired(r)]
            if batch:
                self._run(batch)
            if stopping:
                break
        shut_down = LorakitError("the serving engine shut down before this request ran")
        leftovers = list(self._waiting)
        while not self._queue.empty():
            leftovers.append(self._queue.get())
        for request in leftovers:
            if request is not None and request.future.set_running_or_notify_cancel():
                request.future.set_exception(shut_down)

    def _run(self, batch: list[Request]) -> None:
        self.tally.batch(len(batch))
        try:
            self.run_batch(batch)
        except Exception as error:  # a bug or a crash in one batch must not stop the server
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)

    def _collect(self, first: Request) -> tuple[list[Request], bool]:
        """`first` plus waiting/queued requests with its key; True when the stop signal was seen."""
        batch = [first]
        for request in list(self._waiting):
            if len(batch) == self.max_batch_size:
                return batch, False
            if request.key == first.key:
                self._waiting.remove(request)
                batch.append(request)
        deadline = first.submitted + self.max_wait
        while len(batch) < self.max_batch_size:
            try:
                request = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                break
            if request is None:
                return batch, True
            if request.key == first.key:
                batch.append(request)
            else:
                self._waiting.append(request)
        return batch, False
