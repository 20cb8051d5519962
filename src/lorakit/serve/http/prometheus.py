"""The server's metrics in the Prometheus text exposition format (version 0.0.4), written by hand:
a few counters and histograms need no client library.

    lorakit_http_requests_total{endpoint="/v1/classify",status="200",tenant="acme"} 12
    lorakit_http_request_duration_seconds_bucket{endpoint="/v1/classify",le="0.05"} 9
    lorakit_batch_size_bucket{le="8"} 3
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Mapping

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpMetrics:
    """Requests by endpoint, status and tenant, and a latency histogram per endpoint (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, int, str]] = Counter()
        self._latency: dict[str, Histogram] = {}

    def observe(self, endpoint: str, status: int, tenant: str, seconds: float) -> None:
        """Count one request of `tenant` (its name) to `endpoint`, answered with `status`, which took `seconds`."""
        with self._lock:
            self._requests[(endpoint, status, tenant)] += 1
            self._latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def render(self) -> list[str]:
        """The request counter and latency histograms as exposition lines (HELP, TYPE, samples)."""
        with self._lock:
            lines = _header("lorakit_http_requests_total", "counter", "HTTP requests by endpoint, status and tenant.")
            for (endpoint, status, tenant), count in sorted(self._requests.items()):
                labels = _labels(endpoint=endpoint, status=status, tenant=tenant)
                lines.append(f"lorakit_http_requests_total{labels} {count}")
            name = "lorakit_http_request_duration_seconds"
            lines += _header(name, "histogram", "Time from request to the end of the response body.")
            for endpoint, histogram in sorted(self._latency.items()):
                lines += histogram.render(name, endpoint=endpoint)
            return lines


class Histogram:
    """Counts of observations at or below each bucket bound, their sum and count."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        """Record `value`, `times` times (a counter of sizes replays as one call per size)."""
        index = bisect.bisect_left(self.bounds, value)
        if index < len(self.bounds):
            self.counts[index] += times
        self.total += times
        self.sum += value * times

    def render(self, name: str, **labels: object) -> list[str]:
        """`name`_bucket (cumulative, up to +Inf), _sum and _count lines, each with `labels`."""
        lines, cumulative = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            lines.append(f"{name}_bucket{_labels(**labels, le=_number(bound))} {cumulative}")
        lines.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {self.total}")
        lines.append(f"{name}_sum{_labels(**labels)} {_number(self.sum)}")
        lines.append(f"{name}_count{_labels(**labels)} {self.total}")
        return lines


def engine_lines(metrics: Mapping) -> list[str]:
    """`Engine.metrics()` as Prometheus lines: batch sizes, rows, queue depth, adapters."""
    batcher, adapters = metrics["batcher"], metrics["adapters"]
    batch_sizes = Histogram(BATCH_SIZE_BUCKETS)
    for size, count in batcher["batch_sizes"].items():
        batch_sizes.observe(size, count)
    lines = _header("lorakit_batch_size", "histogram", "Rows per batch run by the engine.")
    lines += batch_sizes.render("lorakit_batch_size")
    lines += _header(
        "lorakit_rows_total", "counter", "Rows (texts, prompts) by outcome; refused: turned away, queue full."
    )
    for outcome in ("completed", "failed", "cancelled", "timed_out", "refused"):
        lines.append(f"lorakit_rows_total{_labels(outcome=outcome)} {batcher[outcome]}")
    lines += _gauge("lorakit_queue_depth", "Rows waiting for a batch.", batcher["queued"])
    lines += _gauge("lorakit_adapters_loaded", "Adapters in memory.", adapters["loaded"])
    lines += _gauge("lorakit_adapter_bytes", "Bytes of adapter tensors in memory.", adapters["bytes"])
    lines += _gauge("lorakit_adapter_max_bytes", "Budget for adapter tensors.", adapters["max_bytes"])
    lines += _header("lorakit_adapter_loads_total", "counter", "Adapters loaded (again, after an eviction).")
    lines.append(f"lorakit_adapter_loads_total {adapters['loads']}")
    lines += _header("lorakit_adapter_evictions_total", "counter", "Adapters evicted to keep within the budget.")
    lines.append(f"lorakit_adapter_evictions_total {adapters['evictions']}")
    return lines


def exposition(lines: Iterable[str]) -> str:
    """The body of a /metrics response: the lines, newline-terminated."""
    return "\n".join(lines) + "\n"


def _gauge(name: str, help_text: str, value: float) -> list[str]:
    return [*_header(name, "gauge", help_text), f"{name} {_number(value)}"]


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _labels(**labels: object) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
