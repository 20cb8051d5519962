"""Decode-step time of lorakit's continuous decoder with transformers' concatenating KV cache
(`DynamicLayer`: every step copies every layer's cache) against its own growing one (`SlackLayer`:
written in place, copied only when its room runs out).

SmolLM2-135M-Instruct, 16 random r=8 q/v adapters (one per row), rows × context positions already
prefilled; the two caches alternate step by step so both see the same machine. Reported per
setting: the median step time of each and their ratio; the greedy tokens must be equal.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_kv_cache.py --out benchmarks/results-serve-kv-cache.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from serve_mixed import add_random_adapters, base_model, saved_adapters
from transformers import DynamicCache

from lorakit.serve.engine import decoding
from lorakit.serve.engine.decoding import Decoder, Row
from lorakit.serve.engine.registry import AdapterRegistry
from lorakit.task_kind import TaskKind

MODEL = "SmolLM2-135M-Instruct"


def decoder_with(registry: AdapterRegistry, names: list[str], rows: int, context: int, slack: bool) -> Decoder:
    """A decoder whose `rows` rows (adapter i mod len(names)) have `context` prompt tokens prefilled."""
    decoding.slack_cache = decoding_cache if slack else (lambda config: DynamicCache(config=config))
    decoder = Decoder(registry.model, pad_id=0, slots=registry.slots)
    prompt = list(range(1000, 1000 + context))
    decoder.admit([Row(names[i % len(names)], prompt, 10_000, frozenset()) for i in range(rows)])
    return decoder


def measure(registry: AdapterRegistry, names: list[str], rows: int, context: int, steps: int) -> dict:
    decoders = {slack: decoder_with(registry, names, rows, context, slack) for slack in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(steps):
        for slack, decoder in decoders.items():
            started = time.perf_counter()
            decoder.step()
            times[slack].append(time.perf_counter() - started)
    tokens = {slack: [row.tokens for row in decoder.rows] for slack, decoder in decoders.items()}
    concat, slack = statistics.median(times[False][2:]), statistics.median(times[True][2:])
    return {
        "rows": rows,
        "context": context,
        "concatenating_ms": round(concat * 1000, 1),
        "growing_ms": round(slack * 1000, 1),
        "speedup": round(concat / slack, 2),
        "same_tokens": tokens[False] == tokens[True],
    }


decoding_cache = decoding.slack_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    source = base_model("smollm")
    names = add_random_adapters(source, "smollm", "qv", 16)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        saved_adapters(source, names, Path(tmp))
        model = base_model("smollm").eval()
        registry = AdapterRegistry(model, MODEL, adapters_dir=tmp, kind=TaskKind.CAUSAL_LM)
        loaded = [registry.get(name).model_name for name in names]
        for rows, context in ((4, 300), (16, 100), (16, 300), (16, 600)):
            results.append(measure(registry, loaded, rows, context, args.steps))
            print(results[-1], flush=True)
    report = {"model": MODEL, "threads": args.threads, "cpu": _cpu(), "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
