"""Mixed-adapter serving throughput: one batch whose rows use different LoRA adapters.

Contenders, on the same base and the same batch (128 rows by default, so that 128 distinct
adapters can share one batch):

- **base**: the plain base model (no adapter at all): the ceiling.
- **merged**: a plain model with one adapter merged into its weights (serving a single adapter).
- **lorakit**: `with lorakit.serve.mixed_adapters(model, rows, slots): model(**batch)`, on
  adapters packed once into `AdapterSlots` (in the autocast dtype), as `lorakit serve` keeps them.
- **peft**: PEFT's mixed batch, `peft_model(**batch, adapter_names=rows)` (a sub-batch per adapter).

n adapters (r=8, alpha=16, random non-zero A and B, plus a random classifier head for SEQ_CLS) on
q/v (`qv`) or on every Linear of the blocks (`all`) are loaded on the lorakit and PEFT models —
the same weights: lorakit saves them and PEFT loads those files, and each workload first checks
that both give the same logits. Row i of a batch uses adapter (offset + i) mod n; the offset
moves every round. Loading times are recorded too: PEFT's `load_adapter` and lorakit's
`load_adapter` + `AdapterSlots.add` of the same folders, one after another as a server loads them.

Workloads: **prefill**, one forward pass over the batch (a causal LM keeps only the last
position's logits, as generation's first step does); for the causal LM also **decode**, steps
of one token per row on a KV cache of the batch (the mixed block wraps all steps, as it wraps
`generate`; the tokens fed are fixed, so that every contender's logits can be compared).
Contenders run interleaved, one after another in each round; a contender's time in a round is
the fastest of `--inner` back-to-back runs, the reported throughput the median over rounds, and
each ratio the median of per-round ratios. "PEFT / base" is the most any mixed-batch method
could gain over PEFT: none can beat the base model's own time.

`--kernels` times one layer's LoRA term alone: what lorakit runs (gather + bmm; for one token per
row a compiled fused gather-reduce, `lorakit/serve/kernels/bgmv.py`) against gather + bmm alone and a
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
from lorakit.serve import AdapterSlots
from lorakit.serve.kernels.bgmv import _gather_bmm_, add_lora_delta_
from lorakit.serve.kernels.mixed import mixed_adapters
from lorakit.serve.kernels.slots import PackedLora

MODELS = {
    "minilm": ("all-MiniLM-L6-v2", "SEQ_CLS", {"qv": ["query", "value"], "all": ["query", "key", "value", "dense"]}),
    "smollm": (
        "SmolLM2-135M-Instruct",
        "CAUSAL_LM",
        {
            "qv": ["q_proj", "v_proj"],
            "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        },
    ),
}
RANK = 8


# The packaged models' shapes, for `--random-weights` (a machine without the packaged models).
RANDOM_CONFIGS = {
    "minilm": transformers.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
    ),
    "smollm": transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
}
DEVICE = torch.device("cpu")  # --device
RANDOM_WEIGHTS = False  # --random-weights


def base_model(key: str) -> nn.Module:
    """The packaged model `key` (or a random one of its shape, seed 0) on `DEVICE`, in eval mode."""
    name, task, _ = MODELS[key]
    if RANDOM_WEIGHTS:
        torch.manual_seed(0)
        classify = task == "SEQ_CLS"
        auto = transformers.AutoModelForSequenceClassification if classify else transformers.AutoModelForCausalLM
        config = RANDOM_CONFIGS[key]
        config.num_labels = 2
        model = auto.from_config(config)
    else:
        model = load_model(name, task, num_labels=2 if task == "SEQ_CLS" else None)
    return model.to(DEVICE).eval()


def add_random_adapters(model: nn.Module, key: str, targets: str, count: int) -> list[str]:
    """`count` adapters a0.. with random A, B and head (init_lora_weights=False + a random head)."""
    _, task, target_sets = MODELS[key]
    names = [f"a{i}" for i in range(count)]
    for i, name in enumerate(names):
        torch.manual_seed(1000 + i)
        config = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=target_sets[targets], task_type=task)
        add_adapter(model, dataclasses.replace(config, init_lora_weights=False), name)
        if task == "SEQ_CLS":
            with torch.no_grad():
                for parameter in model.classifier.modules_to_save[name].parameters():
                    parameter.normal_(std=0.1)
    set_adapter(model, None)
    return names


def saved_adapters(model: nn.Module, names: list[str], folder: Path) -> list[Path]:
    for name in names:
        save_adapter(model, folder / name, adapter_name=name)
    return [folder / name for name in names]


def peft_model_with(key: str, folders: list[Path]) -> tuple[nn.Module, float]:
    """A PEFT model holding the adapters in `folders` (named by folder), and the seconds loading took."""
    start = time.perf_counter()
    model = None
    for folder in folders:
        if model is None:
            model = peft.PeftModel.from_pretrained(base_model(key), folder, adapter_name=folder.name)
        else:
            model.load_adapter(folder, adapter_name=folder.name)
    return model.eval(), time.perf_counter() - start


def lorakit_model_with(key: str, folders: list[Path]) -> tuple[nn.Module, float]:
    """A lorakit model holding the same adapters, each packed into slots as it loads (as a server
    does), and the seconds loading and packing took (fp32 slots)."""
    model = base_model(key)
    slots = AdapterSlots(model)
    start = time.perf_counter()
    for folder in folders:
        load_adapter(model, folder, adapter_name=folder.name)
        slots.add(folder.name)
    return model, time.perf_counter() - start


def rows_for(names: list[str], batch: int, offset: int) -> list[str]:
    return [names[(offset + i) % len(names)] for i in range(batch)]


def inputs_for(batch: int, seq: int, vocab: int, steps: int = 0) -> dict[str, torch.Tensor]:
    """Random prompts (batch, seq) and, for decoding, the `steps` tokens fed after them."""
    ids = torch.randint(10, vocab, (batch, seq + steps), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    return {"input_ids": ids[:, :seq], "attention_mask": torch.ones_like(ids[:, :seq]), "next_ids": ids[:, seq:]}


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
    """`steps` decoding steps of one token per row on a KV cache of the prompt.

    The tokens fed are fixed (`inputs["next_ids"]`), not each contender's own argmax: in bf16 one
    rounding-level difference can flip a greedy token and send two contenders down different
    continuations, and then their logits could not be compared. The work per step is the same.
    """
    cache.crop(inputs["input_ids"].shape[1] - cache.get_seq_length())  # back to the prompt (a negative count)
    mask = inputs["attention_mask"]
    with contender.block(rows):
        for step in range(steps):
            mask = torch.cat([mask, mask[:, -1:]], dim=1)
            logits = contender.model(
                input_ids=inputs["next_ids"][:, step : step + 1],
                attention_mask=mask,
                cache=cache,
                use_cache=True,
                **contender.extra(rows),
            ).logits
    return logits


def timed(
    run: Callable[[], torch.Tensor], autocast: Callable[[], contextlib.AbstractContextManager], inner: int
) -> float:
    """Fastest of `inner` back-to-back runs: on a shared machine the minimum is the least disturbed."""
    best = float("inf")
    for _ in range(inner):
        with torch.no_grad(), autocast():
            _synchronize()
            start = time.perf_counter()
            run()
            _synchronize()  # CUDA runs asynchronously: the time is the GPU's work, not its launch
            best = min(best, time.perf_counter() - start)
    return best


def _synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def measure_model(key: str, targets: str, runs: list[tuple[str, str]], args: argparse.Namespace) -> dict:
    """Every (dtype, workload) in `runs` for model `key` with adapters on `targets`, all
    contenders interleaved per round."""
    counts = args.adapters
    base = base_model(key)
    batch, seq = args.batch, args.seq
    inputs = inputs_for(batch, seq, base.config.vocab_size, args.decode_steps)
    prompt = {key: inputs[key] for key in ("input_ids", "attention_mask")}
    causal = MODELS[key][1] == "CAUSAL_LM"
    results: dict = {
        "model": MODELS[key][0],
        "targets": MODELS[key][2][targets],
        "batch": batch,
        "seq": seq,
        "rank": RANK,
        "runs": {},
    }
    source = base_model(key)
    names = add_random_adapters(source, key, targets, max(counts))
    with tempfile.TemporaryDirectory() as tmp:
        folders = saved_adapters(source, names, Path(tmp))
        del source
        lorakit_model, lorakit_load = lorakit_model_with(key, folders)
        print(f"{key} {targets}: lorakit loaded and packed {len(names)} adapters in {lorakit_load:.1f} s", flush=True)
        peft_model, peft_load = peft_model_with(key, folders)
        print(f"{key} {targets}: PEFT loaded {len(names)} adapters in {peft_load:.1f} s", flush=True)
        merged = merge_and_unload(load_adapter(base_model(key), folders[0], adapter_name="m")).eval()
    lorakit_model.eval()
    results["load_seconds"] = {"adapters": len(names), "lorakit": lorakit_load, "peft": peft_load}
    slots = {
        "fp32": AdapterSlots.packing(lorakit_model, names),
        "bf16": AdapterSlots(lorakit_model, dtype=torch.bfloat16),
    }
    slots["bf16"].add(*names)

    contenders = {"base": Contender(base), "merged": Contender(merged)}
    for dtype, workload in runs:

        def autocast(dtype: str = dtype) -> contextlib.AbstractContextManager:
            return torch.autocast(DEVICE.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()

        def block(rows: list[str], dtype: str = dtype) -> contextlib.AbstractContextManager:
            return mixed_adapters(lorakit_model, rows, slots[dtype])

        for count in counts:
            contenders[f"lorakit/{count}"] = Contender(lorakit_model, block)
            contenders[f"peft/{count}"] = Contender(peft_model, extra=lambda rows: {"adapter_names": rows})
        if workload == "prefill":
            run, tokens = functools.partial(prefill, inputs=prompt, causal=causal), batch * seq
        else:
            with torch.no_grad(), autocast():
                cache = base(**prompt, use_cache=True, logits_to_keep=1).cache
            run = functools.partial(decode, inputs=inputs, cache=cache, steps=args.decode_steps)
            tokens = batch * args.decode_steps
        # Same adapters, same logits: the comparison is of equal work.
        check_rows = rows_for(names[: min(max(counts), batch)], batch, 0)
        with torch.no_grad(), autocast():
            ours = run(contenders[f"lorakit/{max(counts)}"], check_rows).float()
            theirs = run(contenders[f"peft/{max(counts)}"], check_rows).float()
        difference = (ours - theirs).abs().max().item()
        label = f"{key} {targets} {dtype} {workload}"
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
                    "peft_vs_base": _median_ratio(times[f"peft/{count}"], times["base"]),
                }
                for count in counts
            },
        }
    return results


def _median_ratio(reference: list[float], contender: list[float]) -> float:
    """Median over rounds of reference time / contender time (> 1: the contender is faster)."""
    return statistics.median(r / c for r, c in zip(reference, contender, strict=True))


KERNEL_SHAPES = {
    "prefill 32x128, 384->384": (32, 128, 384, 384),
    "decode 128x1, 576->1536": (128, 1, 576, 1536),
}


def measure_kernels(counts: list[int], iterations: int) -> dict:
    """One layer's LoRA term added into the base output, fp32 and bf16 stacks: what lorakit runs
    (`add_lora_delta_`: gather + bmm, or for one token per row the compiled fused kernel), gather
    + bmm alone, one pair of matmuls per contiguous segment of rows sharing an adapter
    (SGMV-like), and, for scale, the base Linear itself."""
    results = {}
    for label, (batch, seq, features_in, features_out) in KERNEL_SHAPES.items():
        layer = LoraLinear(nn.Linear(features_in, features_out))
        for dtype in (torch.float32, torch.bfloat16):
            for count in counts:
                names = [f"a{i}" for i in range(count)]
                for i, name in enumerate(names):
                    if name not in layer.lora_A:
                        torch.manual_seed(i)
                        layer.add_adapter(name, RANK, 2.0, 0.0, False)
                # Rows sorted by adapter, as SGMV needs them: contiguous segments.
                rows = sorted(rows_for(names, batch, 0), key=names.index)
                x = torch.randn(batch, seq, features_in, dtype=dtype)
                slot = torch.tensor([names.index(name) + 1 for name in rows])  # slot 0 is the zero slot
                result = torch.zeros(batch, seq, features_out, dtype=dtype)
                packed = packed_layer(layer, names, dtype)
                base = layer.base_layer.to(dtype)
                runs = {
                    "base_linear": functools.partial(base, x),
                    # One adapter for every row: lorakit's mixed block passes its slot (plain LoRA).
                    "lorakit": functools.partial(add_lora_delta_, result, x, packed, slot, 1 if count == 1 else None),
                    "gather_bmm": functools.partial(gather_bmm_, result, x, packed, slot),
                    "sgmv": functools.partial(add_segment_delta_, result, x, segments(layer, rows, dtype)),
                }
                with torch.no_grad():
                    expected = runs["gather_bmm"]().float().clone()
                    for name in ("lorakit", "sgmv"):
                        result.zero_()
                        torch.testing.assert_close(runs[name]().float(), expected, atol=5e-2, rtol=5e-2)
                    timings = {}
                    for name, run in runs.items():
                        run()
                        start = time.perf_counter()
                        for _ in range(iterations):
                            run()
                        timings[name] = round((time.perf_counter() - start) / iterations * 1e6, 1)
                key = f"{label} {str(dtype).removeprefix('torch.')}, {count} adapters"
                results[key] = timings
                print(f"kernel {key} (µs): {timings}", flush=True)
    return results


def gather_bmm_(result: torch.Tensor, x: torch.Tensor, packed: PackedLora, slot: torch.Tensor) -> torch.Tensor:
    """lorakit's gather + bmm path alone, whatever the number of tokens per row."""
    _gather_bmm_(result, x, packed, slot)
    return result


def packed_layer(layer: LoraLinear, names: list[str], dtype: torch.dtype) -> PackedLora:
    """The layer's adapters stacked as `AdapterSlots` holds them (equal ranks here): zero slot first."""
    with torch.no_grad():
        A = torch.stack([layer.lora_A[name].weight for name in names])
        B = torch.stack([layer.lora_B[name].weight.T * layer.scaling[name] for name in names])
        A, B = torch.cat([torch.zeros_like(A[:1]), A]), torch.cat([torch.zeros_like(B[:1]), B])
    return PackedLora(A.to(dtype), B.to(dtype), None)


def segments(
    layer: LoraLinear, rows: list[str], dtype: torch.dtype
) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(start, stop, Aᵀ, scaling·Bᵀ) for each run of equal adapters in the sorted rows."""
    result = []
    for name in dict.fromkeys(rows):
        start, stop = rows.index(name), len(rows) - rows[::-1].index(name)
        a, b = layer.lora_A[name].weight, layer.lora_B[name].weight * layer.scaling[name]
        result.append((start, stop, a.T.to(dtype), b.T.contiguous().to(dtype)))
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
        default=[
            "minilm:qv:fp32:prefill",
            "minilm:qv:bf16:prefill",
            "smollm:qv:bf16:prefill",
            "smollm:qv:bf16:decode",
            "smollm:all:bf16:decode",
            "smollm:all:fp32:decode",
        ],
        help="model:targets:dtype:workload — model minilm|smollm, targets qv|all, dtype fp32|bf16 "
        "(autocast), workload prefill|decode",
    )
    parser.add_argument("--adapters", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seq", type=int, default=32, help="tokens per row (decode: the prompt on the KV cache)")
    parser.add_argument("--inner", type=int, default=1, help="runs per contender per round; the fastest counts")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; on a shared machine 2 OpenMP threads stall at every barrier when a core is taken",
    )
    parser.add_argument("--decode-steps", type=int, default=8, help="causal LM: decoding steps timed per batch")
    parser.add_argument("--kernels", action="store_true", help="also time the LoRA term alone: BGMV vs SGMV")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (the kernel timings stay on CPU)")
    parser.add_argument(
        "--random-weights", action="store_true", help="random models of the packaged ones' shapes (seed 0)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    global DEVICE, RANDOM_WEIGHTS
    DEVICE, RANDOM_WEIGHTS = torch.device(args.device), args.random_weights
    torch.set_num_threads(args.threads)
    report = {
        "command": " ".join(["benchmarks/serve_mixed.py", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu",
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "models": {},
    }
    if args.kernels:
        report["kernels_us"] = measure_kernels([1, 8, 32, 128], iterations=30)
    runs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for spec in args.runs:
        parts = spec.split(":")
        if len(parts) != 4:
            parser.error(f"--runs entry {spec!r} is not model:targets:dtype:workload")
        key, targets, dtype, workload = parts
        if key not in MODELS or targets not in MODELS[key][2] or dtype not in ("fp32", "bf16"):
            parser.error(f"--runs entry {spec!r}: model minilm|smollm, targets qv|all, dtype fp32|bf16")
        if workload not in ("prefill", "decode") or (workload == "decode" and MODELS[key][1] != "CAUSAL_LM"):
            parser.error(f"--runs entry {spec!r}: workload prefill, or decode for a causal LM")
        runs.setdefault((key, targets), []).append((dtype, workload))
    for (key, targets), model_runs in runs.items():
        report["models"][f"{key} {targets}"] = measure_model(key, targets, model_runs, args)
    for result in report["models"].values():
        for label, run in result["runs"].items():
            print(
                f"\n{result['model']} on {'/'.join(result['targets'])}, {label}, batch {args.batch}×{args.seq}, "
                f"tokens/s (median of {args.rounds})"
            )
            print("| contender | tokens/s | vs base | vs PEFT mixed | PEFT / base |")
            print("|---|---|---|---|---|")
            for name in ("base", "merged"):
                print(f"| {name} | {run['tokens_per_s'][name]:,.0f} | | | |")
            for count in args.adapters:
                ratios = run["ratios"][f"lorakit/{count}"]
                peft_speed = run["tokens_per_s"][f"peft/{count}"]
                print(
                    f"| lorakit, {count} adapters | {run['tokens_per_s'][f'lorakit/{count}']:,.0f} | "
                    f"{ratios['vs_base']:.2f}× | {ratios['vs_peft']:.2f}× (PEFT {peft_speed:,.0f}) | "
                    f"{ratios['peft_vs_base']:.2f}× |"
                )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
