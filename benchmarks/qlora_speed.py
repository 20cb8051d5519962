"""QLoRA (frozen NF4 base) against plain LoRA on SmolLM2-135M-Instruct: step time, base-weight
memory and loss curves, on the same batches of real text.

Recipe: LoRA r=8, alpha=16, dropout 0, targets all-linear (the QLoRA paper's choice: every
quantized layer carries an adapter; `--targets q_proj,v_proj` for the attention-only preset),
AdamW lr 5e-4, seed 42. Data: the chatterbot-corpus English Q&A pairs (read from its YAML files,
the package's code is never imported) as "Q: ...\\nA: ..." texts, shuffled, joined with EOS and
cut into fixed batches of `--batch` × `--length` tokens, so every token is real and every
contender sees the same batches in the same order.

Four contenders, each in its own process (so memory is that contender's alone), set up one
after another and then driven in lockstep: step i of each in turn, so drift in the machine's
load hits all four alike:

  lora-fp32    fp32 base, fp32 compute
  qlora-fp32   NF4 base (`lorakit.quant.quantize_model`), dequantized per matmul to fp32
  lora-bf16    bf16 CPU autocast, frozen weights stored in bf16 (as lorakit's training loop does)
  qlora-bf16   NF4 base dequantized straight to bf16 under autocast; embeddings/norms in bf16

A step is forward + backward + AdamW step; the step time is the median over the steps after the
first (warm-up). Base-weight bytes count the body's Linear weights (the ones QLoRA quantizes):
stored NF4 bytes (codes and all scales) against the same weights in fp32 and bf16. "RSS at start"
is the resident set once the model, adapter and optimizer are ready; "peak training" is the
high-water mark from the first step to the last (reset via /proc/self/clear_refs: Linux only),
so activations included. Peak RSS depends on the allocator's reuse of freed blocks and moves by
~100 MiB between identical runs; the JSON also holds each process's lifetime peak, which includes
loading the fp32 checkpoint before quantizing it.

    python benchmarks/qlora_speed.py [--steps 6] [--batch 4] [--length 128] [--targets all-linear] [--threads N]
                                   [--out FILE]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import glob
import importlib.util
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "SmolLM2-135M-Instruct"
RECIPE = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lr": 5e-4, "seed": 42}
CONTENDERS = ("lora-fp32", "qlora-fp32", "lora-bf16", "qlora-bf16")
PROTOCOL = "QLORA-BENCH "  # prefix of the worker's reply lines on stdout
BODY = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def chatterbot_texts() -> list[str]:
    """Every English Q&A pair of chatterbot-corpus as "Q: question\\nA: answer"."""
    import yaml

    root = importlib.util.find_spec("chatterbot_corpus").submodule_search_locations[0]
    texts = []
    for path in sorted(glob.glob(f"{root}/data/english/*.yml")):
        with open(path, encoding="utf-8") as file:
            conversations = yaml.safe_load(file).get("conversations") or []
        for turns in conversations:
            if len(turns) >= 2 and all(isinstance(turn, str) for turn in turns[:2]):
                texts.append(f"Q: {turns[0].strip()}\nA: {turns[1].strip()}")
    return texts


def fixed_batches(tokenizer, steps: int, batch: int, length: int):
    """`steps` batches of (batch, length) token ids: shuffled texts, EOS-joined, cut into rows."""
    import torch

    texts = chatterbot_texts()
    random.Random(RECIPE["seed"]).shuffle(texts)
    needed = steps * batch * length
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) >= needed:
            break
    if len(ids) < needed:
        raise SystemExit(f"the corpus has {len(ids)} tokens; {needed} are needed for these settings")
    return torch.tensor(ids[:needed]).view(steps, batch, length), len(texts)


def vm_kib(field: str) -> int:
    """A `/proc/self/status` memory field (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as status:
        return int(re.search(rf"{field}:\s+(\d+) kB", status.read())[1]) * 1024


class Run:
    """One contender, set up in full: model (quantized or not) with its adapter, batches, optimizer."""

    def __init__(self, contender: str, steps: int, batch: int, length: int, targets: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lorakit import LoraConfig, add_adapter
        from lorakit.models import resolve_model
        from lorakit.quant import quantize_model, quantized_weight_bytes
        from lorakit.train.precision import autocast, cast_frozen_parameters

        self.precision = contender.rsplit("-", 1)[1]
        self.autocast = lambda: autocast(self.precision, torch.device("cpu"))
        path = resolve_model(MODEL)
        self.batches, n_texts = fixed_batches(AutoTokenizer.from_pretrained(path), steps, batch, length)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        # transformers maps the checkpoint file into memory: while any weight still views it, every
        # page read stays in RSS, so quantized layers would still be counted at fp32. Owning copies
        # make RSS count what each contender actually holds.
        for parameter in model.parameters():
            parameter.data = parameter.data.clone()
        body_params = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith(BODY))
        self.info: dict = {"contender": contender, "texts": n_texts, "threads": torch.get_num_threads()}
        if contender.startswith("qlora"):
            one_row = self.batches[0][:1]
            with torch.no_grad():
                reference = model(input_ids=one_row).logits
            start = time.perf_counter()
            quantize_model(model, "nf4")
            self.info["quantize_seconds"] = time.perf_counter() - start
            with torch.no_grad():
                error = (model(input_ids=one_row).logits - reference).norm() / reference.norm()
            self.info["logits_relative_error"] = error.item()
            self.info["weight_bytes"] = quantized_weight_bytes(model)
        else:
            stored = (2 if self.precision == "bf16" else 4) * body_params
            self.info["weight_bytes"] = {"stored_bytes": stored, "fp32_bytes": 4 * body_params}
        torch.manual_seed(RECIPE["seed"])  # the same A initialisation for every contender
        config = LoraConfig(
            r=RECIPE["r"],
            lora_alpha=RECIPE["lora_alpha"],
            lora_dropout=RECIPE["lora_dropout"],
            target_modules="all-linear" if targets == "all-linear" else targets.split(","),
            task_type="CAUSAL_LM",
        )
        add_adapter(model, config)
        cast_frozen_parameters(model, self.precision)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.info["trainable_params"] = sum(p.numel() for p in trainable)
        self.optimizer = torch.optim.AdamW(trainable, lr=RECIPE["lr"])
        self.model = model.train()
        # Freed setup memory (the fp32 copies, quantizing temporaries) stays in glibc's heap unless
        # handed back; quantize_model does so, and every contender gets the same here.
        gc.collect()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.info["rss_before_training_bytes"] = vm_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM: the peak from here on is the training's own

    def step(self, index: int) -> dict:
        ids = self.batches[index]
        start = time.perf_counter()
        with self.autocast():
            loss = self.model(input_ids=ids, labels=ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"seconds": time.perf_counter() - start, "loss": loss.item()}

    def finish(self) -> dict:
        return self.info | {"peak_training_rss_bytes": vm_kib("VmHWM"), "peak_process_rss_bytes": peak_rss()}


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(contender: str, args: argparse.Namespace) -> None:
    """Set up, report, then run one step per `step I` line from the parent until `done`."""
    run = Run(contender, args.steps, args.batch, args.length, args.targets)
    reply(run.info)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "done":
            reply(run.finish())
            return
        reply(run.step(int(rest[0])))


def reply(message: dict) -> None:
    print(PROTOCOL + json.dumps(message), flush=True)


class Worker:
    """A contender's process, driven one step at a time so the four take turns on the CPU."""

    def __init__(self, contender: str, args: argparse.Namespace) -> None:
        self.contender = contender
        self.errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 (open while the worker lives; read on failure)
        command = [sys.executable, __file__, "--worker", contender, "--steps", str(args.steps)]
        command += ["--batch", str(args.batch), "--length", str(args.length), "--targets", args.targets]
        command += ["--threads", str(args.threads)] if args.threads else []
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors, text=True
        )
        self.info = self.ask(None)

    def ask(self, command: str | None) -> dict:
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL) :])
        self.errors.seek(0)
        raise SystemExit(f"{self.contender} failed:\n{self.errors.read()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per contender (default 6)")
    parser.add_argument("--batch", type=int, default=4, help="sequences per batch (default 4)")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--targets", default="all-linear", help="LoRA targets: all-linear or a comma list")
    parser.add_argument("--threads", type=int, help="torch intra-op threads per worker (default: torch's own)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write all results as JSON here")
    args = parser.parse_args()
    if args.worker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        worker(args.worker, args)
        return
    started, load_before = time.time(), os.getloadavg()
    workers = [Worker(contender, args) for contender in CONTENDERS]  # set up one after another
    steps: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
    for index in range(args.steps):
        for w in workers:
            steps[w.contender].append(w.ask(f"step {index}"))
    runs = {w.contender: w.ask("done") for w in workers}
    for contender, r in runs.items():
        seconds = [s["seconds"] for s in steps[contender]]
        r |= {
            "step_seconds": seconds,
            "median_step_seconds": statistics.median(seconds[1:] or seconds),  # the first step warms up
            "losses": [s["loss"] for s in steps[contender]],
        }
    comparison = {}
    for precision in ("fp32", "bf16"):
        lora, qlora = runs[f"lora-{precision}"], runs[f"qlora-{precision}"]
        gaps = [abs(a - b) for a, b in zip(lora["losses"], qlora["losses"], strict=True)]
        comparison[precision] = {
            "step_time_ratio": qlora["median_step_seconds"] / lora["median_step_seconds"],
            "start_rss_ratio": qlora["rss_before_training_bytes"] / lora["rss_before_training_bytes"],
            "peak_training_rss_ratio": qlora["peak_training_rss_bytes"] / lora["peak_training_rss_bytes"],
            "loss_max_abs_diff": max(gaps),
            "loss_mean_abs_diff": sum(gaps) / len(gaps),
        }
    nf4 = runs["qlora-fp32"]
    sizes = nf4["weight_bytes"]
    results = {
        "model": MODEL,
        "recipe": RECIPE | {"targets": args.targets},
        "steps": args.steps,
        "batch": args.batch,
        "length": args.length,
        "threads": nf4["threads"],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": time.time() - started,
        "weight_bytes": sizes,
        "nf4_vs_fp32": sizes["quantized_linear_bytes"] / sizes["fp32_bytes"],
        "nf4_vs_bf16": sizes["quantized_linear_bytes"] / sizes["bf16_bytes"],
        "quantize_seconds": nf4["quantize_seconds"],
        "logits_relative_error": nf4["logits_relative_error"],
        "comparison": comparison,
        "runs": runs,
    }
    report(results, args)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)


def report(results: dict, args: argparse.Namespace) -> None:
    mib, runs, sizes = 2**20, results["runs"], results["weight_bytes"]
    print(
        f"{MODEL}, LoRA r={RECIPE['r']} alpha={RECIPE['lora_alpha']} {args.targets}, {args.steps} interleaved steps "
        f"of {args.batch}×{args.length} chatterbot tokens, {results['threads']} threads "
        f"(load average {results['load_average_before'][0]:.1f} before, {results['load_average_after'][0]:.1f} after):"
    )
    print(f"  {'contender':<11} {'step (median)':>13} {'RSS at start':>13} {'peak training':>14}  first → last loss")
    for contender in CONTENDERS:
        r = runs[contender]
        print(
            f"  {contender:<11} {r['median_step_seconds']:>11.2f} s {r['rss_before_training_bytes'] / mib:>9,.0f} MiB "
            f"{r['peak_training_rss_bytes'] / mib:>10,.0f} MiB  {r['losses'][0]:.3f} → {r['losses'][-1]:.3f}"
        )
    print(
        f"Body Linear weights ({sizes['quantized_linears']} layers): "
        f"NF4 {sizes['quantized_linear_bytes'] / mib:.1f} MiB vs fp32 {sizes['fp32_bytes'] / mib:.1f} MiB "
        f"({results['nf4_vs_fp32']:.3f}×), bf16 {sizes['bf16_bytes'] / mib:.1f} MiB "
        f"({results['nf4_vs_bf16']:.3f}×); quantizing took "
        f"{results['quantize_seconds']:.1f} s; NF4 logits relative error {results['logits_relative_error']:.3f}"
    )
    for precision, c in results["comparison"].items():
        print(
            f"QLoRA vs LoRA, {precision}: step time {c['step_time_ratio']:.2f}×, RSS at start "
            f"{c['start_rss_ratio']:.2f}×, peak training RSS {c['peak_training_rss_ratio']:.2f}×; "
            f"loss |diff| max {c['loss_max_abs_diff']:.4f}, "
            f"mean {c['loss_mean_abs_diff']:.4f}"
        )


if __name__ == "__main__":
    main()
