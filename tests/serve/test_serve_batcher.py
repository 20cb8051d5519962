"""The batching worker and the per-request text stream, with plain Python batch functions."""

from __future__ import annotations

import asyncio
import threading

import pytest

from lorakit.errors import LorakitError
from lorakit.serve.engine.batcher import Batcher, Request
from lorakit.serve.engine.stream import Piece, TokenStream


class Recorder:
    """A run_batch that waits for `gate` on its first call, records batches, and fails on "boom"."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()  # set when a batch has begun running
        self.batches: list[list[str]] = []

    def __call__(self, requests: list[Request]) -> None:
        self.started.set()
        self.gate.wait(10)
        self.batches.append([request.payload for request in requests])
        if "boom" in self.batches[-1]:
            raise RuntimeError("model crashed")
        for request in requests:
            request.future.set_result(request.payload.upper())


def test_batches_by_key_up_to_the_size_limit() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=3, max_wait_ms=300)
    order = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("a", "a3"), ("b", "b2"), ("a", "a4"), ("a", "a5")]
    futures = [batcher.submit(key, None, payload) for key, payload in order]
    recorder.gate.set()
    assert [future.result(timeout=10) for future in futures] == [payload.upper() for _, payload in order]
    batcher.close()
    assert recorder.batches == [["a1", "a2", "a3"], ["b1", "b2"], ["a4", "a5"]]
    metrics = batcher.metrics()
    assert metrics["batch_sizes"] == {2: 2, 3: 1}
    assert (metrics["requests"], metrics["completed"], metrics["batches"], metrics["queued"]) == (7, 7, 3, 0)
    assert 0 <= metrics["latency_s"]["p50"] <= metrics["latency_s"]["p95"] <= metrics["latency_s"]["max"]


def test_a_crashing_batch_fails_its_requests_only() -> None:
    recorder = Recorder()
    recorder.gate.set()
    batcher = Batcher(recorder, max_batch_size=2, max_wait_ms=0)
    crashed = batcher.submit("k", None, "boom")
    with pytest.raises(RuntimeError, match="model crashed"):
        crashed.result(timeout=10)
    assert batcher.submit("k", None, "fine").result(timeout=10) == "FINE"
    batcher.close()
    assert batcher.metrics()["failed"] == 1


def test_cancelled_requests_are_skipped_and_close_fails_the_queue() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch_size=1, max_wait_ms=0)
    running = batcher.submit("k", None, "first")
    assert recorder.started.wait(10)  # "first" runs: close() must let it finish, not fail it as queued
    cancelled = batcher.submit("k", None, "never")
    queued = batcher.submit("k", None, "late")
    assert cancelled.cancel()
    threading.Timer(0.2, recorder.gate.set).start()  # the first batch finishes while close() waits
    batcher.close()
    assert running.result(timeout=10) == "FIRST"
    with pytest.raises(LorakitError, match="shut down before this request ran"):
        queued.result(timeout=10)
    assert recorder.batches == [["first"]]
    assert batcher.metrics()["cancelled"] == 1
    with pytest.raises(LorakitError, match="shut down"):
        batcher.submit("k", None, "after")


def test_stream_readers_in_threads_see_every_piece_then_the_end() -> None:
    stream = TokenStream()
    stream.push(Piece("Hel"))
    seen: list[Piece] = []
    reader = threading.Thread(target=lambda: seen.extend(stream))
    reader.start()
    stream.push(Piece("lo"))
    stream.push(Piece(" world"))
    stream.close()
    reader.join(10)
    assert seen == [Piece("Hel"), Piece("lo"), Piece(" world")]
    assert list(stream) == seen  # a late reader gets everything too
    assert stream.text() == "Hello world"


def test_stream_raises_its_error_after_the_pieces() -> None:
    stream = TokenStream()
    stream.push(Piece("partial"))
    stream.close(LorakitError("adapter vanished"))
    seen = []
    with pytest.raises(LorakitError, match="adapter vanished"):
        for piece in stream:
            seen.append(piece)
    assert seen == [Piece("partial")]


def test_stream_async_iteration_while_another_thread_pushes() -> None:
    stream = TokenStream()

    def produce() -> None:
        for text in ["a", "b", "c"]:
            stream.push(Piece(text))
        stream.close()

    async def consume() -> list[str]:
        threading.Timer(0.05, produce).start()
        return [piece.text async for piece in stream]

    assert asyncio.run(consume()) == ["a", "b", "c"]
