"""How long a client that hangs up delays the next request: `lorakit serve` on SmolLM2-135M-Instruct,
a 500-token chat stream opened and dropped after its first chunk, then at once a 3-token request.

Its latency is compared with the same request on the idle server (the median of 5 each); the
difference is the delay the abandoned stream caused (its row must leave at the next step, so the
delay is at most about one decode step). Also reported: `rows_total{outcome="cancelled"}`.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_hangup.py --out benchmarks/results-serve-hangup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from serve_vllm import MODEL, free_port


def short(url: str) -> float:
    """Seconds for a whole 3-token completion."""
    body = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 3, "temperature": 0}
    started = time.perf_counter()
    requests.post(f"{url}/v1/completions", json=body, timeout=120).raise_for_status()
    return time.perf_counter() - started


def after_hang_up(url: str) -> float:
    """Open a 500-token stream, read its first chunk, hang up; the next short request's seconds."""
    messages = [{"role": "user", "content": "Write a long story about the sea."}]  # a chat: it goes on
    body = {"model": MODEL, "messages": messages, "max_tokens": 500, "stream": True, "temperature": 0}
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=120) as stream:
        lines = stream.iter_lines()
        next(line for line in lines if line)
    return short(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as adapters:
        command = [sys.executable, "-m", "lorakit.cli.main", "serve", "--base", MODEL, "--adapters", adapters]
        process = subprocess.Popen([*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if requests.get(f"{url}/health", timeout=2).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.5)
            short(url)  # warm-up
            idle = [short(url) for _ in range(5)]
            hung = []
            for _ in range(5):
                hung.append(after_hang_up(url))
                time.sleep(1)
            metrics = requests.get(f"{url}/metrics", timeout=30).text
        finally:
            process.terminate()
            process.wait(timeout=60)
    counter = 'lorakit_rows_total{outcome="cancelled"}'
    cancelled = next(line for line in metrics.splitlines() if line.startswith(counter))
    report = {
        "model": MODEL,
        "short_request_idle_s": round(statistics.median(idle), 3),
        "short_request_after_hang_up_s": round(statistics.median(hung), 3),
        "delay_s": round(statistics.median(hung) - statistics.median(idle), 3),
        "cancelled": cancelled,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
