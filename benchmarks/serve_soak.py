"""Soak test of `lorakit serve`: thousands of generation requests over 32 adapters while adapters
are loaded, unloaded and evicted in between; every answer checked, the server's memory watched.

A causal base (by default a small random Llama with SmolLM2's tokenizer, so 10,000 requests take
minutes; `--base SmolLM2-135M-Instruct` for the real one), 32 random r=8 q/v adapters, and an
adapter budget that holds about 8 of them (the rest are evicted and reloaded as requests ask).
`--clients` threads send `--requests` requests in all, each to a random adapter:

    55 %  completion, 1..8 tokens, whole answer        20 %  chat, streamed
     5 %  streamed, the client hangs up after the first chunk
     5 %  an unknown adapter (must be 404)              5 %  max_tokens 0 (must be 400)
    10 %  GET /v1/models

and one more thread loads and unloads random adapters (POST /v1/load_lora_adapter, DELETE
/v1/adapters/NAME; a refusal of an adapter in use, or of one already (un)loaded, is a 4xx and
expected). An error is any other answer: a 5xx, a dropped connection, an unexpected status. The
server's resident memory (VmRSS) is read after warm-up (the first 10 % of requests) and at the end.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_soak.py --requests 10000 \\
        --out benchmarks/results-serve-soak.json
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from serve_vllm import free_port

TOKENIZER_OF = "SmolLM2-135M-Instruct"
ADAPTERS = 32


def write_base(folder: Path, name: str | None) -> Path:
    """The base model folder: `name` as lorakit resolves it, or a small random Llama (hidden 64,
    2 layers) with SmolLM2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lorakit.models import resolve_model

    if name is not None:
        return Path(resolve_model(name))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(TOKENIZER_OF))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_adapters(base: Path, folder: Path) -> tuple[list[str], int]:
    """32 random adapters of `base`; their names and the bytes of one."""
    import torch

    from lorakit.lora import LoraConfig, add_adapter, save_adapter
    from lorakit.models import load_model

    names = []
    for i in range(ADAPTERS):
        model = load_model(str(base), "CAUSAL_LM")
        torch.manual_seed(2000 + i)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        add_adapter(model, config)
        names.append(f"s{i}")
        save_adapter(model, folder / names[-1])
    return names, (folder / names[0] / "adapter_model.safetensors").stat().st_size


class Soak:
    """The clients' shared counters: answers by kind and status, errors (with a few examples)."""

    def __init__(self, url: str, base: str, names: list[str], total: int, seed: int) -> None:
        self.url, self.base, self.names = url, base, names
        self.left = total
        self.lock = threading.Lock()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.random = random.Random(seed)
        self.warm = threading.Event()
        self.warm_after = total - total // 10

    def take(self) -> tuple[int, float] | None:
        """The next request's number and a random draw, or None when all are sent."""
        with self.lock:
            if self.left == 0:
                return None
            self.left -= 1
            if self.left == self.warm_after:
                self.warm.set()
            return self.left, self.random.random()

    def note(self, kind: str, status: int | str, expected: tuple) -> None:
        with self.lock:
            self.outcomes[f"{kind} {status}"] += 1
            if status not in expected and len(self.errors) < 20:
                self.errors.append(f"{kind}: {status}")
            if status not in expected:
                self.outcomes["errors"] += 1


def client(soak: Soak) -> None:
    session = requests.Session()
    while (drawn := soak.take()) is not None:
        number, draw = drawn
        adapter = soak.names[number % len(soak.names)]
        try:
            one_request(soak, session, adapter, draw)
        except requests.RequestException as error:
            soak.note("connection", type(error).__name__, ())


def one_request(soak: Soak, session: requests.Session, adapter: str, draw: float) -> None:
    url = soak.url
    tokens = 1 + int(draw * 1000) % 8
    if draw < 0.55:
        body = {"model": adapter, "prompt": "Tell me about the sea", "max_tokens": tokens, "temperature": 0}
        answer = session.post(f"{url}/v1/completions", json=body, timeout=300)
        ok = answer.status_code == 200 and answer.json()["choices"][0]["finish_reason"] in ("stop", "length")
        soak.note("completion", answer.status_code if ok or answer.status_code != 200 else "bad body", (200,))
    elif draw < 0.80 or draw < 0.85:
        hang_up = draw >= 0.80
        messages = [{"role": "user", "content": "Say something"}]
        body = {"model": adapter, "messages": messages, "max_tokens": 32 if hang_up else tokens, "stream": True}
        with session.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=300) as answer:
            lines = answer.iter_lines()
            if hang_up:
                next(lines, None)
                answer.close()
                soak.note("hang-up", answer.status_code, (200,))
                return
            done = any(line == b"data: [DONE]" for line in lines)
        soak.note("stream", answer.status_code if done else "no [DONE]", (200,))
    elif draw < 0.90:
        body = {"model": "no-such-adapter", "prompt": "hi", "max_tokens": 2}
        soak.note("unknown adapter", session.post(f"{url}/v1/completions", json=body, timeout=60).status_code, (404,))
    elif draw < 0.95:
        body = {"model": adapter, "prompt": "hi", "max_tokens": 0}
        soak.note("max_tokens 0", session.post(f"{url}/v1/completions", json=body, timeout=60).status_code, (400,))
    else:
        soak.note("models", session.get(f"{url}/v1/models", timeout=60).status_code, (200,))


def manager(soak: Soak, adapters: Path, stop: threading.Event) -> None:
    """Load and unload random adapters while the clients run."""
    session, chance = requests.Session(), random.Random(7)
    while not stop.wait(0.2):
        name = chance.choice(soak.names)
        try:
            if chance.random() < 0.5:
                body = {"lora_name": name, "lora_path": str(adapters / name)}
                status = session.post(f"{soak.url}/v1/load_lora_adapter", json=body, timeout=60).status_code
                soak.note("load", status, (200, 400))  # 400: already loaded
            else:
                status = session.delete(f"{soak.url}/v1/adapters/{name}", timeout=60).status_code
                soak.note("unload", status, (200, 404, 409))  # not loaded; in use by a running request
        except requests.RequestException as error:
            soak.note("connection", type(error).__name__, ())


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def run_soak(base: Path, adapters: Path, names: list[str], budget: int, args: argparse.Namespace, log: Path) -> dict:
    port = free_port()
    command = [sys.executable, "-m", "lorakit.cli.main", "serve", "--base", str(base), "--adapters", str(adapters)]
    command += ["--port", str(port), "--max-adapter-bytes", str(budget), "--max-tokens-limit", "64"]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(process, url, log)
        soak = Soak(url, str(base), names, args.requests, seed=0)
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(soak,)) for _ in range(args.clients)]
        threads.append(threading.Thread(target=manager, args=(soak, adapters, stop)))
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        soak.warm.wait()
        warm_rss = rss_bytes(process.pid)
        for thread in threads[:-1]:
            thread.join()
        stop.set()
        threads[-1].join()
        wall = time.perf_counter() - started
        end_rss = rss_bytes(process.pid)
        metrics = requests.get(f"{url}/metrics", timeout=60).text
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {
        "requests": args.requests,
        "wall_seconds": round(wall, 1),
        "errors": soak.outcomes.pop("errors", 0),
        "error_examples": soak.errors,
        "outcomes": dict(sorted(soak.outcomes.items())),
        "rss_after_warm_up_mib": round(warm_rss / 2**20, 1),
        "rss_at_end_mib": round(end_rss / 2**20, 1),
        "rss_growth_percent": round(100 * (end_rss - warm_rss) / warm_rss, 2),
        "adapter_loads_and_evictions": [
            line for line in metrics.splitlines() if line.startswith(("lorakit_adapter_loads", "lorakit_adapter_evi"))
        ],
    }


def _wait_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"lorakit serve exited with {process.returncode}; see {log}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"lorakit serve did not answer within 600 s; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="a packaged or local causal LM (default: a small random Llama)")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lorakit-soak-") as work:
        base = write_base(Path(work) / "base", args.base)
        names, one = write_adapters(base, Path(work) / "adapters")
        budget = 8 * 2 * one  # about 8 adapters, each counted with its packed copy
        report = {"base": args.base or "random Llama (hidden 64, 2 layers), SmolLM2 tokenizer", "clients": args.clients}
        report |= run_soak(base, Path(work) / "adapters", names, budget, args, Path(work) / "server.log")
        if report["errors"]:
            print((Path(work) / "server.log").read_text()[-5000:])
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
