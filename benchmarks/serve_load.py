"""Load test of `lorakit serve` on loopback: many clients, random adapters, one shared base.

A temporary folder gets `--adapters` random classification adapters (r=8, q/v, a random 2..4-way
head, non-zero A and B) for the packaged all-MiniLM-L6-v2; the server runs in a subprocess;
`--clients` threads send POST /v1/classify (`--inputs` texts each, to a random adapter) back to
back for `--seconds`. Reported: requests/s, rows/s, latency p50/p99, errors (non-200 answers),
and the mean batch size the engine ran, from the server's /metrics.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_load.py --clients 8 --seconds 20 \\
        --out benchmarks/results-serve-load.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

BASE = "all-MiniLM-L6-v2"
WORDS = ["the", "film", "was", "quite", "good", "bad", "dull", "lovely", "plot", "acting", "story", "boring", "fun"]


def write_adapters(folder: Path, count: int, seed: int) -> list[str]:
    import torch
    import transformers

    from lorakit.lora import LoraConfig, ModulesToSave, add_adapter, save_adapter
    from lorakit.models import load_classifier

    transformers.logging.set_verbosity_error()  # each fresh head's load report is expected noise
    names = []
    for i in range(count):
        labels = [f"label{j}" for j in range(2 + i % 3)]
        model = load_classifier(BASE, labels)
        torch.manual_seed(seed + i)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS", init_lora_weights=False
        )
        add_adapter(model, config)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, ModulesToSave):
                    for parameter in module.modules_to_save["default"].parameters():
                        parameter.normal_(std=0.05)
        name = f"adapter{i}"
        save_adapter(model, folder / name)
        (folder / name / "lorakit.json").write_text(
            json.dumps({"task": "classification", "base_model": BASE, "label_names": labels})
        )
        names.append(name)
    return names


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.5)
    raise SystemExit("the server did not come up")


def batch_metrics(url: str) -> tuple[float, float]:
    values = {}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(("lorakit_batch_size_sum", "lorakit_batch_size_count")):
            key, value = line.split()
            values[key] = float(value)
    return values["lorakit_batch_size_sum"], values["lorakit_batch_size_count"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--inputs", type=int, default=1, help="texts per request")
    parser.add_argument("--threads", type=int, help="torch threads in the server")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapters"
        names = write_adapters(folder, args.adapters, seed=0)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "lorakit.cli.main", "serve", "--base", BASE, "--adapters", str(folder)]
        command += ["--port", str(port), "--max-wait-ms", str(args.max_wait_ms)]
        command += ["--threads", str(args.threads)] if args.threads else []
        process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        try:
            wait_for(url, process)
            for name in names:  # warm up: every adapter loaded once, outside the timing
                requests.post(f"{url}/v1/classify", json={"adapter": name, "inputs": ["warm up"]}, timeout=60)
            sum_before, count_before = batch_metrics(url)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()
            stop_at = time.monotonic() + args.seconds

            def client(seed: int) -> None:
                rng = random.Random(seed)
                session = requests.Session()
                while time.monotonic() < stop_at:
                    texts = [" ".join(rng.choices(WORDS, k=rng.randint(5, 30))) for _ in range(args.inputs)]
                    body = {"adapter": rng.choice(names), "inputs": texts}
                    start = time.perf_counter()
                    response = session.post(f"{url}/v1/classify", json=body, timeout=120)
                    elapsed = time.perf_counter() - start
                    with lock:
                        latencies.append(elapsed)
                        if response.status_code != 200:
                            errors.append(f"{response.status_code} {response.text[:200]}")

            started = time.monotonic()
            workers = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            wall = time.monotonic() - started
            sum_after, count_after = batch_metrics(url)
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)

    latencies.sort()
    results = {
        "command": " ".join(sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads or 'default'}",
        "base": BASE,
        "adapters": args.adapters,
        "clients": args.clients,
        "inputs_per_request": args.inputs,
        "seconds": round(wall, 2),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 2),
        "rows_per_s": round(len(latencies) * args.inputs / wall, 2),
        "latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 1),
            "p99": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        },
        "errors": len(errors),
        "mean_batch_size": round((sum_after - sum_before) / max(count_after - count_before, 1), 2),
    }
    print(json.dumps(results, indent=2))
    for error in errors[:5]:
        print("error:", error, file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
