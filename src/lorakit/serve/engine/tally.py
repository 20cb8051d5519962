"""What a request queue counts for /metrics: requests by outcome, rows per forward, latencies.

Shared by the batcher (classification) and the scheduler (generation); thread-safe.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import CancelledError, Future

from lorakit.serve.engine.overload import DeadlineExceeded

_LATENCY_WINDOW = 1000  # latencies kept for percentiles


class Tally:
    """Counters: requests, completed, failed, cancelled, timed_out (past their deadline), refused
    (queue full, never queued), batches (forward passes that ran rows), the rows of each, and
    latency from submit to result."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(
            ("requests", "completed", "failed", "cancelled", "timed_out", "refused", "batches"), 0
        )
        self._batch_sizes: collections.Counter[int] = collections.Counter()
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        self._latency_sum = 0.0

    def submitted(self) -> None:
        """One request queued."""
        with self._lock:
            self._counters["requests"] += 1

    def batch(self, rows: int) -> None:
        """One forward pass over `rows` rows."""
        with self._lock:
            self._counters["batches"] += 1
            self._batch_sizes[rows] += 1

    def refused(self) -> None:
        """A request turned away because the queue was full."""
        with self._lock:
            self._counters["refused"] += 1

    def cancelled(self) -> None:
        """A request given up on (its Future cancelled, or its client gone)."""
        with self._lock:
            self._counters["cancelled"] += 1

    def finished(self, submitted: float, future: Future) -> None:
        """A Future's end (a done-callback): cancelled (or failed with CancelledError: given up on
        while it ran), timed out, failed or completed; `submitted` at that `time.monotonic()`."""
        latency = time.monotonic() - submitted
        if future.cancelled() or isinstance(future.exception(), CancelledError):
            self.cancelled()
            return
        error = future.exception()
        outcome = "completed" if error is None else "timed_out" if isinstance(error, DeadlineExceeded) else "failed"
        with self._lock:
            self._counters[outcome] += 1
            self._latencies.append(latency)
            self._latency_sum += latency

    def metrics(self, queued: int) -> dict:
        """The counters, `queued`, batch_sizes {rows: count}, and latency in seconds: mean over all,
        p50/p95/max over the last 1000."""
        with self._lock:
            latencies = sorted(self._latencies)
            done = self._counters["completed"] + self._counters["failed"] + self._counters["timed_out"]
            return {
                **self._counters,
                "queued": queued,
                "batch_sizes": dict(sorted(self._batch_sizes.items())),
                "latency_s": {
                    "mean": self._latency_sum / done if done else None,
                    "p50": _percentile(latencies, 0.50),
                    "p95": _percentile(latencies, 0.95),
                    "max": latencies[-1] if latencies else None,
                },
            }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(int(q * len(values)), len(values) - 1)]
