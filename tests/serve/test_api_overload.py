"""`lorakit serve` under load and against clients that go away, over real HTTP: a client that hangs
up (mid-stream, or while waiting for a whole answer) gives its row up at the next step; a full
queue answers 503 with Retry-After; `--request-timeout` answers 504 and frees the row.

The base never ends a text on its own (its end-of-turn logit is pinned to 0 while the others are
random), so a 4,000-token request runs for seconds and only a hang-up or a deadline ends it early.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import torch
from api_servers import causal_base, running_server
from transformers import AutoModelForCausalLM

LONG = 4000  # tokens: seconds of decoding on this base


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-overload")
    base = causal_base(root / "base", max_positions=LONG + 64, hidden=64)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        model.lm_head.weight[model.config.eos_token_id] = 0.0
    model.save_pretrained(base)
    (root / "adapters").mkdir()
    return {"root": root, "base": base, "adapters": root / "adapters"}


@pytest.fixture(scope="module")
def url(folders: dict[str, Path]) -> str:
    flags = ("--max-tokens-limit", str(LONG), "--max-batch-size", "1", "--max-queue", "1")
    with running_server(folders["base"], folders["adapters"], folders["root"] / "server.log", *flags) as url:
        yield url


def completion(folders: dict, max_tokens: int, **settings) -> dict:
    return {"model": str(folders["base"]), "prompt": "w5 w6", "max_tokens": max_tokens, "temperature": 0} | settings


def metric(url: str, line: str) -> float:
    """The value of the /metrics sample named `line` (name and labels), 0 if absent."""
    found = re.search(rf"^{re.escape(line)} (\S+)$", requests.get(f"{url}/metrics", timeout=30).text, re.M)
    return float(found.group(1)) if found else 0.0


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {seconds} s"
        time.sleep(0.05)


def cancelled(url: str) -> float:
    return metric(url, 'lorakit_rows_total{outcome="cancelled"}')


def test_a_client_that_hangs_up_a_stream_gives_its_row_up(url: str, folders: dict) -> None:
    before = cancelled(url)
    body = completion(folders, LONG, stream=True)
    with requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=60) as response:
        assert response.status_code == 200
        next(line for line in response.iter_lines() if line)  # the row runs
    wait_for(lambda: cancelled(url) == before + 1, "cancelled")
    short = requests.post(f"{url}/v1/completions", json=completion(folders, 3), timeout=60)
    assert short.status_code == 200 and short.json()["usage"]["completion_tokens"] == 3


def test_a_client_that_hangs_up_before_its_whole_answer_gives_its_row_up(url: str, folders: dict) -> None:
    before, steps = cancelled(url), metric(url, "lorakit_batch_size_count")
    body = json.dumps(completion(folders, LONG)).encode()
    host, port = url.removeprefix("http://").split(":")
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as client:
        client.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        wait_for(lambda: metric(url, "lorakit_batch_size_count") > steps + 2, "decoding")
    wait_for(lambda: cancelled(url) == before + 1, "cancelled")
    hung_up = 'lorakit_http_requests_total{endpoint="/v1/completions",status="499",tenant="-"}'
    wait_for(lambda: metric(url, hung_up) == 1, "counted as 499")


def test_a_full_queue_answers_503_with_retry_after(url: str, folders: dict) -> None:
    body = completion(folders, LONG, stream=True)
    with requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=60) as running:
        lines = running.iter_lines()  # kept: a line iterator dropped half-read closes the connection
        next(line for line in lines if line)  # it holds the one decoding row
        waiting: list[requests.Response] = []
        thread = threading.Thread(
            target=lambda: waiting.append(requests.post(f"{url}/v1/completions", json=completion(folders, 3)))
        )
        thread.start()
        wait_for(lambda: metric(url, "lorakit_queue_depth") == 1, "queued")
        refused = requests.post(f"{url}/v1/completions", json=completion(folders, 3), timeout=60)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    thread.join(60)
    assert waiting[0].status_code == 200  # it ran once the stream's client left
    assert metric(url, 'lorakit_rows_total{outcome="refused"}') == 1


def test_a_request_past_the_timeout_answers_504_and_frees_its_row(folders: dict) -> None:
    flags = ("--max-tokens-limit", str(LONG), "--request-timeout", "1")
    with running_server(folders["base"], folders["adapters"], folders["root"] / "timeout.log", *flags) as url:
        whole = requests.post(f"{url}/v1/completions", json=completion(folders, LONG), timeout=60)
        assert whole.status_code == 504 and whole.json()["error"]["code"] == "timeout"
        body = completion(folders, LONG, stream=True)
        with requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=60) as streamed:
            events = [json.loads(line[6:]) for line in streamed.iter_lines() if line and line != b"data: [DONE]"]
        assert events[0]["choices"][0]["text"] != ""  # text came before the deadline
        assert events[-1]["error"]["code"] == "timeout"
        assert metric(url, 'lorakit_rows_total{outcome="timed_out"}') == 2
        short = requests.post(f"{url}/v1/completions", json=completion(folders, 3), timeout=60)
        assert short.status_code == 200
