"""Mixed-adapter serving throughput: one batch whose rows use different LoRA adapters.

Contenders, on the same base and the same batch (32 sequences × 128 tokens by default):

- **base**: the plain base model (no adapter at all): the ceiling.
- **merged**: a plain model with one adapter merged into its weights (serving a single adapter).
- **lorakit**: `with lorakit.serve.mixed_adapters(model, rows): model(**batch)`, packing included.
- **peft**: PEFT's mixed batch, `peft_model(**batch, adapter_names=rows)` (a sub-batch per adapter).

n adapters (r=8, alpha=16, q/v, random non-zero A and B, plus a random classifier head for
SEQ_CLS) are loaded on the lorakit and PEFT models — the same weights: lorakit saves them and
PEFT loads those files, and each workload first checks that both give the same logits. Row i of
a batch uses adapter (offset + i) mod n; the offset moves every round, so with 128 adapters and
32 rows successive batches use different adapters.

Workloads: **prefill**, one forward pass over the batch (a causal LM keeps only the last
position's logits, as generation's first step does); for the causal LM also **decode**, greedy
steps of one token per row on a KV cache of the batch (the mixed block wraps all steps, as it
wraps `generate`). Contenders run interleaved, one after another in each round; a contender's
time in a round is the fastest of `--inner` back-to-back runs, the reported throughput the
median over rounds, and each ratio the median of per-round ratios.

`--kernels` times one layer's LoRA term alone: the gather-bmm (BGMV) that lorakit uses against a
loop over contiguous adapter segments (SGMV-like).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_mixed.py --kernels --out benchmarks/results-serve.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import peft
import torch
import transformers
from torch import nn
from transformers import DynamicCache

from lorakit.lora import LoraConfig, LoraLinear, add_adapter, load_adapter, merge_and_unload, save_adapter, set_adapter
from lorakit.models import load_model
from lorakit.serve.mixed import add_lora_delta_, mixed_adapters, pack_layer

MODELS = {
    "minilm": ("all-MiniLM-L6-v2", "SEQ_CLS", ["query", "value"]),
    "smollm": ("SmolLM2-135M-Instruct", "CAUSAL_LM", ["q_proj", "v_proj"]),
}
RANK = 8


def base_model(key: str) -> nn.Module:
    name, task, _ = MODELS[key]
    return load_model(name, task, num_labels=2 if task == "SEQ_CLS" else None).eval()


def add_random_adapters(model: nn.Module, key: str, count: int) -> list[str]:
    """`count` adapters a0.. with random A, B and head (init_lora_weights=False + a random head)."""
    _, task, targets = MODELS[key]
    names = [f"a{i}" for i in range(count)]
    for i, name in enumerate(names):
        torch.manual_seed(1000 + i)
        config = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=targets, task_type=task)
        add_adapter(model, dataclasses.replace(config, init_lora_weights=False), name)
        if task == "SEQ_CLS":
            with torch.no_grad():
                for parameter in model.classifier.modules_to_save[name].parameters():
                    parameter.normal_(std=0.1)
    set_adapter(model, None)
    return names


def peft_model_with(key: str, lorakit_model: nn.Module, names: list[str], folder: Path) -> nn.Module:
    """A PEFT model holding the same adapters, loaded from files lorakit wrote."""
    model = None
    for name in names:
        save_adapter(lorakit_model, folder / name, adapter_name=name)
        if model is None:
            model = peft.PeftModel.from_pretrained(base_model(key), folder / name, adapter_name=name)
        else:
            model.load_adapter(folder / name, adapter_name=name)
    return model.eval()


def rows_for(names: list[str], batch: int, offset: int) -> list[str]:
    return [names[(offset + i) % len(names)] for i in range(batch)]


def inputs_for(batch: int, seq: int, vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(10, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@dataclasses.dataclass
class Contender:
    """A model, the block a batch runs in (lorakit's mixed mode), and extra forward arguments (PEFT's)."""

    model: nn.Module
    block: Callable[[list[str]], contextlib.AbstractContextManager] = lambda rows: contextlib.nullcontext()
    extra: Callable[[list[str]], dict] = lambda rows: {}


def prefill(contender: Contender, rows: list[str], inputs: dict, causal: bool) -> torch.Tensor:
    """One forward pass over the whole batch (a causal LM keeps only the last position's logits,
    as generation's first step does)."""
    kwargs = {"logits_to_keep": 1} if causal else {}
    with contender.block(rows):
        return contender.model(**inputs, **kwargs, **contender.extra(rows)).logits


def decode(contender: Contender, rows: list[str], inputs: dict, cache: DynamicCache, steps: int) -> torch.Tensor:
    """`steps` greedy decoding steps of one token per row on a KV cache of the prompt."""
    cache.crop(inputs["input_ids"].shape[1] - cache.get_seq_length())  # back to the prompt (a negative count)
    ids, mask = inputs["input_ids"][:, -1:], inputs["attention_mask"]
    with contender.block(rows):
        for _ in range(steps):
            mask = torch.cat([mask, mask[:, -1:]], dim=1)
            logits = contender.model(
                input_ids=ids, attention_mask=mask, cache=cache, use_cache=True, **contender.extra(rows)
            ).logits
            ids = logits[:, -1:].argmax(-1)
    return logits


def timed(
    run: Callable[[], torch.Tensor], autocast: Callable[[], contextlib.AbstractContextManager], inner: int
) -> float:
    """Fastest of `inner` back-to-back runs: on a shared machine the minimum is the least disturbed."""
    best = float("inf")
    for _ in range(inner):
        with torch.no_grad(), autocast():
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
    return best


def measure_model(key: str, runs: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    """Every (dtype, workload) in `runs` for model `key`, all contenders interleaved per round."""
    counts = args.adapters
    base = base_model(key)
    batch, seq = args.batch, args.seq
    inputs = inputs_for(batch, seq, base.config.vocab_size)
    causal = MODELS[key][1] == "CAUSAL_LM"
    results: dict = {"model": MODELS[key][0], "batch": batch, "seq": seq, "rank": RANK, "runs": {}}
    lorakit_model = base_model(key)
    names = add_random_adapters(lorakit_model, key, max(counts))
    with tempfile.TemporaryDirectory() as tmp:
        peft_model = peft_model_with(key, lorakit_model, names, Path(tmp))
        merged = merge_and_unload(load_adapter(base_model(key), Path(tmp) / names[0], adapter_name="m")).eval()
    contenders = {"base": Contender(base), "merged": Contender(merged)}
    for count in counts:
        contenders[f"lorakit/{count}"] = Contender(lorakit_model, functools.partial(mixed_adapters, lorakit_model))
        contenders[f"peft/{count}"] = Contender(peft_model, extra=lambda rows: {"adapter_names": rows})
    for dtype, workload in runs:

        def autocast(dtype: str = dtype) -> contextlib.AbstractContextManager:
            return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

        if workload == "prefill":
            run, tokens = functools.partial(prefill, inputs=inputs, causal=causal), batch * seq
        else:
            with torch.no_grad(), autocast():
                cache = base(**inputs, use_cache=True, logits_to_keep=1).cache
            run = functools.partial(decode, inputs=inputs, cache=cache, steps=args.decode_steps)
            tokens = batch * args.decode_steps
        # Same adapters, same logits: the comparison is of equal work.
        check_rows = rows_for(names[: min(max(counts), batch)], batch, 0)
        with torch.no_grad(), autocast():
            ours = run(contenders[f"lorakit/{max(counts)}"], check_rows).float()
            theirs = run(contenders[f"peft/{max(counts)}"], check_rows).float()
        difference = (ours - theirs).abs().max().item()
        label = f"{key} {dtype} {workload}"
        print(f"{label}: max |lorakit - peft| logits = {difference:.2e}", flush=True)
        for name in ("base", "merged"):  # lorakit's and PEFT's models ran just above
            timed(functools.partial(run, contenders[name], check_rows), autocast, 1)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for round_ in range(args.rounds):
            for name, contender in contenders.items():
                count = int(name.split("/")[1]) if "/" in name else 1
                rows = rows_for(names[:count], batch, round_ * batch)
                times[name].append(timed(functools.partial(run, contender, rows), autocast, args.inner))
            summary = ", ".join(f"{name} {tokens / times[name][-1]:,.0f}" for name in contenders)
            print(f"{label} round {round_ + 1}/{args.rounds} tokens/s: {summary}", flush=True)
        results["runs"][f"{dtype} {workload}"] = {
            "tokens_per_batch": tokens,
            "max_abs_logit_difference_lorakit_vs_peft": difference,
            "seconds": times,
            "tokens_per_s": {name: tokens / statistics.median(values) for name, values in times.items()},
            "ratios": {
                f"lorakit/{count}": {
                    "vs_base": _median_ratio(times["base"], times[f"lorakit/{count}"]),
                    "vs_merged": _median_ratio(times["merged"], times[f"lorakit/{count}"]),
                    "vs_peft": _median_ratio(times[f"peft/{count}"], times[f"lorakit/{count}"]),
                }
                for count in counts
            },
        }
    return results


def _median_ratio(reference: list[float], contender: list[float]) -> float:
    """Median over rounds of reference time / contender time (> 1: the contender is faster)."""
    return statistics.median(r / c for r, c in zip(reference, contender, strict=True))


KERNEL_SHAPES = {"prefill 32x128x384": (32, 128, 384), "decode 32x1x576": (32, 1, 576)}


def measure_kernels(counts: list[int], iterations: int) -> dict:
    """One layer's LoRA term added into the base output: gather-bmm (BGMV, lorakit) vs one pair of
    matmuls per contiguous segment of rows that share an adapter (SGMV-like), and, for scale, the
    base Linear itself."""
    results = {}
    for label, (batch, seq, features) in KERNEL_SHAPES.items():
        layer = LoraLinear(nn.Linear(features, features))
        for count in counts:
            names = [f"a{i}" for i in range(count)]
            for i, name in enumerate(names):
                if name not in layer.lora_A:
                    torch.manual_seed(i)
                    layer.add_adapter(name, RANK, 2.0, 0.0, False)
            # Rows sorted by adapter, as SGMV needs them: contiguous segments.
            rows = sorted(rows_for(names, batch, 0), key=names.index)
            x = torch.randn(batch, seq, features)
            slot = torch.tensor([names.index(name) for name in rows])
            result = torch.zeros(batch, seq, features)
            runs = {
                "base_linear": functools.partial(layer.base_layer, x),
                "bgmv": functools.partial(add_lora_delta_, result, x, pack_layer(layer, names), slot),
                "sgmv": functools.partial(add_segment_delta_, result, x, segments(layer, rows)),
            }
            with torch.no_grad():
                bgmv = runs["bgmv"]().clone()
                result.zero_()
                torch.testing.assert_close(runs["sgmv"](), bgmv, atol=1e-4, rtol=1e-4)
                timings = {}
                for name, run in runs.items():
                    run()
                    start = time.perf_counter()
                    for _ in range(iterations):
                        run()
                    timings[name] = round((time.perf_counter() - start) / iterations * 1e6, 1)
            results[f"{label}, {count} adapters"] = timings
            print(f"kernel {label}, {count} adapters (µs): {timings}", flush=True)
    return results


def segments(layer: LoraLinear, rows: list[str]) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(start, stop, Aᵀ, scaling·Bᵀ) for each run of equal adapters in the sorted rows."""
    result = []
    for name in dict.fromkeys(rows):
        start, stop = rows.index(name), len(rows) - rows[::-1].index(name)
        a, b = layer.lora_A[name].weight, layer.lora_B[name].weight * layer.scaling[name]
        result.append((start, stop, a.T, b.T.contiguous()))
    return result


def add_segment_delta_(
    result: torch.Tensor, x: torch.Tensor, parts: list[tuple[int, int, torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """SGMV-like: for each contiguous segment of rows sharing an adapter, result += (x·Aᵀ)·(s·Bᵀ)."""
    for start, stop, a, b in parts:
        out = result[start:stop].view(-1, result.shape[-1])
        out.addmm_(x[start:stop].reshape(-1, x.shape[-1]) @ a, b)
    return result


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["minilm:fp32:prefill", "minilm:bf16:prefill", "smollm:bf16:prefill", "smollm:fp32:decode"],
        help="model:dtype:workload — model minilm|smollm, dtype fp32|bf16 (autocast), workload prefill|decode",
    )
    parser.add_argument("--adapters", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--inner", type=int, default=1, help="runs per contender per round; the fastest counts")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on a shared machine 2 OpenMP threads stall at every barrier when a core is taken",
    )
    parser.add_argument("--decode-steps", type=int, default=16, help="causal LM: decoding steps timed per batch")
    parser.add_argument("--kernels", action="store_true", help="also time the LoRA term alone: BGMV vs SGMV")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {
        "command": " ".join(["benchmarks/serve_mixed.py", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "models": {},
    }
    if args.kernels:
        report["kernels_us"] = measure_kernels([1, 8, 32], iterations=50)
    runs: dict[str, list[tuple[str, str]]] = {}
    for spec in args.runs:
        key, dtype, workload = spec.split(":")
        if key not in MODELS or dtype not in ("fp32", "bf16") or workload not in ("prefill", "decode"):
            parser.error(f"--runs entry {spec!r} is not model:dtype:workload")
        if workload == "decode" and MODELS[key][1] != "CAUSAL_LM":
            parser.error(f"--runs entry {spec!r}: decode needs a causal LM")
        runs.setdefault(key, []).append((dtype, workload))
    for key, model_runs in runs.items():
        report["models"][key] = measure_model(key, model_runs, args)
    for result in report["models"].values():
        for label, run in result["runs"].items():
            print(f"\n{result['model']} {label}, batch {args.batch}×{args.seq}, tokens/s (median of {args.rounds})")
            print("| contender | tokens/s | vs base | vs PEFT mixed |")
            print("|---|---|---|---|")
            for name in ("base", "merged"):
                print(f"| {name} | {run['tokens_per_s'][name]:,.0f} | | |")
            for count in args.adapters:
                ratios = run["ratios"][f"lorakit/{count}"]
                peft_speed = run["tokens_per_s"][f"peft/{count}"]
                print(
                    f"| lorakit, {count} adapters | {run['tokens_per_s'][f'lorakit/{count}']:,.0f} | "
                    f"{ratios['vs_base']:.2f}× | {ratios['vs_peft']:.2f}× (PEFT {peft_speed:,.0f}) |"
                )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
