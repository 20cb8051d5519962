"""Load limits of the engine: a bounded queue (QueueFull, with a Retry-After hint) and a
per-request deadline (DeadlineExceeded) for waiting and running requests, generation and
classification alike."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from serve_helpers import slow_steps, text, write_generator
from test_serve_batcher import Recorder
from test_serve_engine import generator_engine

from lorakit.errors import LorakitError
from lorakit.serve.engine.batcher import Batcher
from lorakit.serve.engine.overload import DeadlineExceeded, QueueFull


@pytest.fixture
def generator_dir(tmp_path: Path) -> Path:
    for name, r, seed in (("g2", 2, 1), ("g4", 4, 2), ("g8", 8, 3)):
        write_generator(tmp_path / name, r=r, seed=seed)
    return tmp_path


def test_a_full_queue_refuses_with_a_retry_hint_and_rolls_nothing_back(generator_dir: Path) -> None:
    with generator_engine(generator_dir, max_batch_size=1, max_queued=1) as engine:
        slow_steps(engine, 0.02)
        running = engine.submit_generate("g2", text([5, 6]), max_new_tokens=60)
        next(iter(running.stream))  # it runs: the one decoder row is taken
        waiting = engine.submit_generate("g4", text([7]), max_new_tokens=2)
        with pytest.raises(QueueFull, match="1 rows are already waiting") as refused:
            engine.submit_generate("g8", text([8]), max_new_tokens=2)
        assert 1 <= refused.value.retry_after <= 60
        running.cancel()
        assert waiting.future.result(timeout=60).completion_tokens == 2
        metrics = engine.metrics()["batcher"]
    assert (metrics["requests"], metrics["refused"], metrics["cancelled"], metrics["completed"]) == (2, 1, 1, 1)


def test_a_running_request_past_its_deadline_leaves_the_batch(generator_dir: Path) -> None:
    with generator_engine(generator_dir, request_timeout=0.5) as engine:
        slow_steps(engine, 0.05)  # 60 tokens: 3 s, far past the deadline
        late = engine.submit_generate("g2", text([5, 6]), max_new_tokens=60)
        with pytest.raises(DeadlineExceeded, match=r"request timeout of 0\.5 s"):
            late.future.result(timeout=60)
        with pytest.raises(DeadlineExceeded):
            list(late.stream)  # the text streamed so far, then the error
        assert 1 <= len(late.stream.text().split()) < 60
        engine.registry.unload("g2")  # unpinned when it left
        decoder_rows = len(engine.batcher.decoder.rows)
        on_time = engine.submit_generate("g4", text([7]), max_new_tokens=2)
        assert on_time.future.result(timeout=60).completion_tokens == 2
        metrics = engine.metrics()["batcher"]
    assert decoder_rows == 0
    assert (metrics["timed_out"], metrics["completed"], metrics["failed"]) == (1, 1, 0)


def test_a_waiting_request_past_its_deadline_never_runs(generator_dir: Path) -> None:
    with generator_engine(generator_dir, max_batch_size=1, request_timeout=0.5) as engine:
        slow_steps(engine, 0.05)
        first = engine.submit_generate("g2", text([5, 6]), max_new_tokens=60)
        second = engine.submit_generate("g4", text([7]), max_new_tokens=60)
        for handle in (first, second):
            with pytest.raises(DeadlineExceeded):
                handle.future.result(timeout=60)
        assert first.stream.text() != "" and second.stream.text() == ""
        assert engine.metrics()["batcher"]["timed_out"] == 2


def test_classification_requests_past_their_deadline_are_not_run() -> None:
    recorder = Recorder()  # its first batch waits for the gate
    batcher = Batcher(recorder, max_batch_size=1, max_wait_ms=0, timeout=0.2)
    first = batcher.submit("k", None, "first")
    assert recorder.started.wait(10)
    second = batcher.submit("k", None, "second")
    time.sleep(0.3)  # the second request's deadline passes while the first batch runs
    recorder.gate.set()
    assert first.result(timeout=10) == "FIRST"
    with pytest.raises(DeadlineExceeded):
        second.result(timeout=10)
    batcher.close()
    assert recorder.batches == [["first"]]
    assert batcher.metrics()["timed_out"] == 1


def test_bounds_are_checked() -> None:
    with pytest.raises(LorakitError, match="max_queued must be at least 1"):
        Batcher(Recorder(), max_queued=0)
    with pytest.raises(LorakitError, match="more than 0 seconds"):
        Batcher(Recorder(), timeout=0)
