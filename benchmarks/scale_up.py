"""lorakit against TRL `SFTTrainer` + PEFT as models grow: peak memory, speed and (on real data)
validation loss of causal-LM LoRA fine-tuning on CPU.

Two suites, each contender in its own fresh process:

`--suite chatterbot`: the real SmolLM2-135M-Instruct (the plain transformers folder lorakit converts
its packaged GGUF to, `lorakit.models.resolve_model`) on the chatterbot Q&A pairs, 1 epoch, the
default lorakit recipe: LoRA r=8, alpha=32, dropout 0.1 on q_proj,v_proj; AdamW lr 5e-4, weight
decay 0.01, linear schedule with 6 % warmup, batch 16, max_length 256, seed 42. Both sides train on
the same train/validation split: lorakit's own loader (`load_generative_data("chatterbot")`, seed 42)
carves it in this process, lorakit's CLI carves the same one from the same seed, and the TRL child
reads it as JSONL.

  lorakit          `lorakit train --task causal-lm` with the recipe's flags (its defaults; the
                   memory planner turns activation checkpointing on for this run)
  lorakit-no-ckpt  the same with `--gradient-checkpointing off`
  lorakit-2gib     the same with `--max-memory 2GiB`: checkpointing, with the room the budget
                   leaves spent on unchecked pieces (`--piece-tokens`, lorakit/train/pieces.py)
  trl            SFTTrainer + PEFT LoraConfig, the same recipe; conversational prompt/completion data
                 (completion-only loss), train_sampling_strategy="group_by_length", bf16 autocast
                 only where the CPU runs bf16 natively (`torch.ops.mkldnn._is_mkldnn_bf16_supported()`)
  trl-ckpt       the same with gradient_checkpointing=True (SFTConfig's own default)

Throughput is real (non-padding) training tokens per second of training steps, prompt tokens
included: lorakit's `tokens_per_second` from metrics.json; for TRL the tokens its training steps
take (counted in `training_step`), over the time from the start of the first step to the end of
the last. Validation loss, after training, is lorakit's own metric for both: mean cross-entropy per
response token over the validation split as lorakit tokenizes it (every assistant turn through
its `<|im_end|>`): lorakit's last `history.json` evaluation, and lorakit's `response_loss`
(`lorakit.inference.generation`) run on the TRL-trained model. TRL's own `trainer.evaluate()` is
recorded next to it (`trainer_eval_loss`) but is not the same number: a mean of per-batch means,
over the final answer only, plus the newline ChatML writes after `<|im_end|>`. The recipes differ
in one way the data formats impose: TRL's prompt/completion data trains on the final answer only,
lorakit on every assistant turn (56 of the 718 train conversations, and 6 of the 90 validation
ones, have two or more).

`--suite shapes`: random-weight Llama-shaped models, built once from a config (no download) with
`torch.manual_seed(0)`, saved in bf16 safetensors with the SmolLM2 tokenizer, in `--model-cache`:

  360m   SmolLM2-360M's shape: hidden 960, intermediate 2560, 32 layers, 15 heads, 5 kv heads
  1.7b   SmolLM2-1.7B's shape: hidden 2048, intermediate 8192, 24 layers, 32 heads, 32 kv heads
  tiny   hidden 256, intermediate 512, 4 layers, 4 heads (for a quick check of the harness)

(vocab 49152, tied embeddings, max_position_embeddings 8192). Each trains `--steps` steps of 4 rows
of chatterbot pairs packed into 512 tokens, LoRA r=8 on q_proj,v_proj (the rest of the recipe as
above):

  lorakit           `lorakit train --packing --batch-size 4 --max-length 512 --gradient-checkpointing off`
                    (its default precision: bf16 on a CPU with AVX-512 bf16, else fp32)
  lorakit-nf4       the same with `--quantize nf4` (torchao NF4 base, quantized while loading)
  lorakit-nf4-ckpt  the same with `--quantize nf4 --gradient-checkpointing on`
  trl               SFTTrainer + PEFT, fp32, packing=True (TRL's best-fit-decreasing, padding-free)
  trl-ckpt          the same with gradient_checkpointing=True
  trl-bnb4-ckpt     the same with the base loaded in bitsandbytes 4-bit NF4, fp32 compute (TRL
                    keeps a quantized model's LoRA weights in bf16); skipped when bitsandbytes is
                    not installed

lorakit always evaluates before training, at its last step and on the test split; so that this
costs seconds, not minutes, on a 1.7B model, its data folder here holds the whole train split but
only 8 validation and 8 test examples. Seconds per step: lorakit's `train_seconds / steps` (a mean
over every step, the first included); for TRL the same mean from a callback's step times, and the
median of the steps after the first next to it. Ratios use the means. Both sides pack best-fit
decreasing into rows of at most 512 tokens, so a step's work is close but not equal: tokens/step
says how close.

Memory: each contender is one child process and the parent reaps it with `os.wait4`, whose
resource usage is that process's own: `ru_maxrss` is the kernel's high-water mark of its resident
set, over its whole life (loading the model included), measured at every page fault rather than
sampled, so no short peak is missed. It counts every resident page, mapped checkpoint files
included. A lorakit child also reports its own peak (`peak_memory_bytes`, the same getrusage
number taken from inside) as a cross-check. A contender that dies (an exit code, or a signal such
as the OOM killer's SIGKILL) is recorded with the tail of its output; the others still run.

    python benchmarks/scale_up.py --suite chatterbot [--contenders lorakit,trl] [--max-train-examples N]
                                  [--steps N] [--out FILE]
    python benchmarks/scale_up.py --suite shapes [--shapes 360m,1.7b] [--contenders ...] [--steps 3]
                                  [--model-cache /tmp/lorakit-bench-models] [--out FILE]

Quick checks of the harness (minutes, not hours):

    python benchmarks/scale_up.py --suite chatterbot --max-train-examples 32 --steps 2 --out /tmp/a.json
    python benchmarks/scale_up.py --suite shapes --shapes tiny --steps 2 --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before huggingface_hub reads it at import

from transformers import TrainerCallback

MODEL = "SmolLM2-135M-Instruct"
RECIPE = {
    "r": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.1,
    "target_modules": ["q_proj", "v_proj"],
    "lr": 5e-4,
    "weight_decay": 0.01,
    "warmup_ratio": 0.06,
    "scheduler": "linear",
    "seed": 42,
}
# Per suite: batch size, max_length, packing.
SUITE_SHAPE = {
    "chatterbot": {"batch_size": 16, "max_length": 256, "packing": False},
    "shapes": {"batch_size": 4, "max_length": 512, "packing": True},
}
# The contenders as plain data, to edit: ("lorakit", extra CLI flags) or ("trl", options), where the
# TRL options are "gradient_checkpointing" and "bnb4" (the base in bitsandbytes 4-bit NF4).
CONTENDERS = {
    "chatterbot": {
        "lorakit": ("lorakit", ()),  # the defaults: the planner turns checkpointing on here
        "lorakit-no-ckpt": ("lorakit", ("--gradient-checkpointing", "off")),
        "lorakit-2gib": ("lorakit", ("--max-memory", "2GiB")),  # spare room → unchecked pieces
        "trl": ("trl", ()),
        "trl-ckpt": ("trl", ("gradient_checkpointing",)),
    },
    "shapes": {
        "lorakit": ("lorakit", ("--gradient-checkpointing", "off")),
        "lorakit-nf4": ("lorakit", ("--quantize", "nf4", "--gradient-checkpointing", "off")),
        "lorakit-nf4-ckpt": ("lorakit", ("--quantize", "nf4", "--gradient-checkpointing", "on")),
        "trl": ("trl", ()),
        "trl-ckpt": ("trl", ("gradient_checkpointing",)),
        "trl-bnb4-ckpt": ("trl", ("gradient_checkpointing", "bnb4")),
    },
}
# Llama shapes (SmolLM2's); the rest of the config is SmolLM2-135M's (vocab 49152, tied embeddings).
SHAPES = {
    "tiny": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4},
    "360m": {
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
    },
    "1.7b": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    },
}
HELD_OUT_EXAMPLES = 8  # validation and test examples in the shapes suite's lorakit data folder
GIB = 2**30


def load_splits(max_train_examples: int | None) -> dict[str, list]:
    """lorakit's own chatterbot train/validation/test split (seed 42), train capped as the CLI caps it."""
    from lorakit.data.generative import load_generative_data
    from lorakit.data.options import GenerativeOptions

    options = GenerativeOptions(seed=RECIPE["seed"], max_train_examples=max_train_examples)
    return load_generative_data("chatterbot", options=options).splits()


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for row in rows:
            file.write(json.dumps(row) + "\n")


def write_data(splits: dict[str, list], folder: Path) -> None:
    """TRL's prompt/completion JSONL (trl-train, trl-validation) and, for lorakit's `--data`, a folder
    of messages JSONL with the whole train split and the first few held-out examples."""
    for split in ("train", "validation"):
        rows = [{"prompt": example.prompt_messages, "completion": example.messages[-1:]} for example in splits[split]]
        write_jsonl(folder / f"trl-{split}.jsonl", rows)
    (folder / "lorakit").mkdir()
    for split in ("train", "validation", "test"):
        examples = splits[split] if split == "train" else splits[split][:HELD_OUT_EXAMPLES]
        write_jsonl(folder / "lorakit" / f"{split}.jsonl", [{"messages": example.messages} for example in examples])


def build_shape(shape: str, cache: Path) -> Path:
    """The random-weight Llama model of `shape` in bf16 safetensors with the SmolLM2 tokenizer; built
    once (seed 0) and reused. Built straight in bf16, so the largest never exists in fp32."""
    folder = cache / f"llama-{shape}-bf16-seed0"
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lorakit.models import resolve_model

    source = resolve_model(MODEL)
    sizes = SHAPES[shape]
    config = AutoConfig.from_pretrained(source)
    for key, value in {"num_key_value_heads": sizes["num_attention_heads"], **sizes}.items():
        setattr(config, key, value)
    config.head_dim = sizes["hidden_size"] // sizes["num_attention_heads"]
    config.max_position_embeddings = 8192
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    partial = cache / f".{folder.name}.partial"
    model.save_pretrained(partial)
    AutoTokenizer.from_pretrained(source).save_pretrained(partial)
    del model
    partial.replace(folder)  # only a finished folder gets the name that is reused
    return folder


def run_child(command: list[str], log: Path) -> dict:
    """Run one contender's process to its end: exit status, wall time and its own peak RSS."""
    started = time.perf_counter()
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if code == 0:
        outcome = "ok"
    elif code < 0:
        outcome = f"killed by {signal.Signals(-code).name}" + (" (the OOM killer?)" if code == -signal.SIGKILL else "")
    else:
        outcome = f"exit {code}"
    result = {
        "command": command,
        "status": outcome,
        "exit_code": code,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
    }
    if code != 0:
        result["output_tail"] = log.read_text(errors="replace")[-3000:]
    return result


def lorakit_command(suite: str, flags: tuple[str, ...], run_dir: Path, args: argparse.Namespace, model: str) -> list:
    shape = SUITE_SHAPE[suite]
    command = [str(Path(sys.executable).parent / "lorakit"), "train", "--task", "causal-lm", "--quiet"]
    command += ["--generation-samples", "0", "--output-dir", str(run_dir), "--model", model, "--epochs", "1"]
    command += ["--r", str(RECIPE["r"]), "--lora-alpha", str(RECIPE["lora_alpha"])]
    command += ["--lora-dropout", str(RECIPE["lora_dropout"]), "--target-modules", ",".join(RECIPE["target_modules"])]
    command += ["--lr", str(RECIPE["lr"]), "--weight-decay", str(RECIPE["weight_decay"])]
    command += ["--warmup-ratio", str(RECIPE["warmup_ratio"]), "--scheduler", RECIPE["scheduler"]]
    command += ["--seed", str(RECIPE["seed"]), "--batch-size", str(shape["batch_size"])]
    command += ["--max-length", str(shape["max_length"])]
    if shape["packing"]:
        command += ["--packing", "--data", str(args.work / "lorakit")]
    else:
        command += ["--data", "chatterbot"]
    if args.max_train_examples and suite == "chatterbot":
        command += ["--max-train-examples", str(args.max_train_examples)]
    if args.steps:
        command += ["--max-steps", str(args.steps)]
    return command + list(flags)


def run_lorakit(suite: str, name: str, flags: tuple[str, ...], args: argparse.Namespace, model: str) -> dict:
    label = f"{Path(model).name}-{name}"  # one folder per model and contender: shapes run in turn
    run_dir = args.work / f"run-{label}"
    result = run_child(lorakit_command(suite, flags, run_dir, args, model), args.work / f"{label}.log")
    if result["exit_code"] != 0:
        return result
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    step_seconds = metrics["train_seconds"] / metrics["steps"]
    return result | {
        "steps": metrics["steps"],
        "train_seconds": metrics["train_seconds"],
        "tokens_per_second": metrics["tokens_per_second"],
        "tokens_per_step": metrics["tokens_per_second"] * step_seconds,
        "mean_step_seconds": step_seconds,
        "validation_loss": history["eval"][-1]["loss"],
        "precision": metrics["precision"],
        "self_reported_peak_memory_bytes": metrics["peak_memory_bytes"],
        "estimated_peak_memory_bytes": metrics.get("estimated_peak_memory_bytes"),
        "gradient_checkpointing": metrics.get("gradient_checkpointing"),
        "piece_tokens": metrics.get("piece_tokens"),
    }


def run_trl_child(suite: str, name: str, options: tuple[str, ...], args: argparse.Namespace, model: str) -> dict:
    if "bnb4" in options and importlib.util.find_spec("bitsandbytes") is None:
        return {"status": "skipped: bitsandbytes is not installed", "exit_code": None}
    from lorakit.models import resolve_model

    out = args.work / f"{Path(model).name}-{name}.json"
    command = [sys.executable, __file__, "--worker", name, "--suite", suite, "--model", resolve_model(model)]
    command += ["--work", str(args.work), "--result", str(out), "--trl-options", ",".join(options)]
    command += ["--steps", str(args.steps)] if args.steps else []
    result = run_child(command, args.work / f"{Path(model).name}-{name}.log")
    if result["exit_code"] == 0:
        result |= json.loads(out.read_text())
    return result


def trl_worker(args: argparse.Namespace) -> None:
    """One TRL + PEFT run in this process; writes its numbers to `args.result`."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    options = set(filter(None, args.trl_options.split(",")))
    shape = SUITE_SHAPE[args.suite]
    chatterbot = args.suite == "chatterbot"
    # bf16 autocast only where the CPU has bf16 instructions (emulated bf16 is slower than fp32);
    # the shapes suite is fp32 throughout.
    bf16 = chatterbot and torch.ops.mkldnn._is_mkldnn_bf16_supported()

    def read(split: str):
        with open(args.work / f"trl-{split}.jsonl", encoding="utf-8") as file:
            return Dataset.from_list([json.loads(line) for line in file])

    quantization = None
    if "bnb4" in options:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
        )
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, quantization_config=quantization)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    counter = {"tokens": 0}
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        config = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=shape["batch_size"],
            per_device_eval_batch_size=shape["batch_size"],
            max_length=shape["max_length"],
            packing=shape["packing"],
            completion_only_loss=True,
            train_sampling_strategy="group_by_length" if chatterbot else "random",
            gradient_checkpointing="gradient_checkpointing" in options,
            bf16=bf16,
            use_cpu=True,
            learning_rate=RECIPE["lr"],
            weight_decay=RECIPE["weight_decay"],
            warmup_steps=RECIPE["warmup_ratio"],  # a float below 1 is a ratio of the total steps
            lr_scheduler_type=RECIPE["scheduler"],
            max_grad_norm=1.0,
            num_train_epochs=1,
            max_steps=args.steps or -1,
            seed=RECIPE["seed"],
            logging_steps=10,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        peft_config = LoraConfig(
            r=RECIPE["r"],
            lora_alpha=RECIPE["lora_alpha"],
            lora_dropout=RECIPE["lora_dropout"],
            target_modules=RECIPE["target_modules"],
            task_type="CAUSAL_LM",
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=read("train"),
            eval_dataset=read("validation") if chatterbot else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[clock],
        )
        train_step = trainer.training_step

        def counting_step(step_model, inputs, *rest, **kwargs):
            # Counted here, not in the collator: accelerate's loader fetches one batch ahead.
            mask = inputs.get("attention_mask")  # padding-free batches have no padding and no mask
            counter["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            return train_step(step_model, inputs, *rest, **kwargs)

        trainer.training_step = counting_step
        train_output = trainer.train()
        tokens = counter["tokens"]
        seconds = clock.step_seconds
        span = clock.last_end - clock.first_start
        result = {
            "steps": trainer.state.global_step,
            "train_seconds": round(span, 2),
            "trainer_train_runtime": train_output.metrics["train_runtime"],
            "tokens_per_second": tokens / span,
            "tokens_per_step": tokens / len(seconds),
            "train_set_tokens": sum(len(ids) for ids in trainer.train_dataset["input_ids"]),
            "step_seconds": seconds,
            "mean_step_seconds": sum(seconds) / len(seconds),
            "median_step_seconds": statistics.median(seconds[1:] or seconds),  # the first step warms up
            "precision": "bf16" if bf16 else "fp32",
            "weight_bytes": trainer.model.get_memory_footprint(),
            "bnb_4bit_linears": sum(type(m).__module__.startswith("bitsandbytes") for m in trainer.model.modules()),
        }
        if chatterbot:
            result["trainer_eval_loss"] = trainer.evaluate()["eval_loss"]
            result["validation_loss"] = lorakit_validation_loss(trainer.model, tokenizer, args.work, bf16)
    result["self_reported_peak_memory_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(args.result).write_text(json.dumps(result, indent=2))


class StepClock(TrainerCallback):
    """Each optimizer step's seconds, and the span from the first step's start to the last's end."""

    def __init__(self) -> None:
        self.step_seconds: list[float] = []
        self.first_start = self.start = self.last_end = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()
        self.first_start = self.first_start or self.start

    def on_step_end(self, args, state, control, **kwargs):
        self.last_end = time.perf_counter()
        self.step_seconds.append(self.last_end - self.start)


def lorakit_validation_loss(model, tokenizer, work: Path, bf16: bool) -> float:
    """lorakit's own validation loss, of a model trained elsewhere: mean cross-entropy per response
    token over lorakit's tokenization of the validation conversations (`tokenize_causal`: every
    assistant turn labelled through its `<|im_end|>`), by lorakit's `response_loss`."""
    import torch

    from lorakit.data.chat import CausalCollator, tokenize_causal
    from lorakit.data.types import GenerativeExample
    from lorakit.inference.generation import response_loss

    with open(work / "trl-validation.jsonl", encoding="utf-8") as file:
        rows = [json.loads(line) for line in file]
    examples = [GenerativeExample(row["prompt"] + row["completion"]) for row in rows]
    tokenized = [tokenize_causal(tokenizer, example, SUITE_SHAPE["chatterbot"]["max_length"]) for example in examples]
    tokenized = [row for row in tokenized if row is not None]
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    batch_size = SUITE_SHAPE["chatterbot"]["batch_size"]
    loss_sum, tokens = response_loss(model, tokenized, CausalCollator(tokenizer), batch_size, True, autocast)
    return loss_sum / tokens


def machine() -> dict:
    import torch

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model_name = re.search(r"Model name:\s*(.+)", lscpu)
    with open("/proc/cpuinfo") as cpuinfo:
        flags = set(re.search(r"flags\s*:(.*)", cpuinfo.read())[1].split())
    versions = {}
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "torchao"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model_name[1].strip() if model_name else platform.processor(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "mkldnn_bf16_supported": torch.ops.mkldnn._is_mkldnn_bf16_supported(),
        "torch_threads": torch.get_num_threads(),
        "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "versions": versions,
    }


def ratios(results: dict[str, dict], by_tokens: bool) -> dict:
    """Each contender against each TRL contender that finished: peak RSS (below 1 = less memory) and
    speed (above 1 = faster): tokens per second, or else the inverse of the mean seconds per step."""
    ok = {name: r for name, r in results.items() if r.get("exit_code") == 0}
    baselines = {name: r for name, r in ok.items() if name.startswith("trl")}

    def speed(r: dict, b: dict) -> float:
        if by_tokens:
            return r["tokens_per_second"] / b["tokens_per_second"]
        return b["mean_step_seconds"] / r["mean_step_seconds"]

    return {
        name: {
            f"vs {base}": {"peak_rss": r["peak_rss_bytes"] / b["peak_rss_bytes"], "speed": speed(r, b)}
            for base, b in baselines.items()
            if base != name
        }
        for name, r in ok.items()
    }


def markdown(title: str, results: dict[str, dict], ratio_table: dict, chatterbot: bool) -> str:
    bases = [name for name, r in results.items() if name.startswith("trl") and r.get("exit_code") == 0]
    speed = "tok/s" if chatterbot else "s/step"
    head = ["contender", "status", "precision", "peak RSS", speed, "tokens/step"]
    head += ["val loss"] if chatterbot else []
    head += [f"RSS / speed vs {base}" for base in bases]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        if r.get("exit_code") != 0:
            lines.append(f"| {name} | {r['status']} |" + " |" * (len(head) - 2))
            continue
        cells = [name, r["status"], r["precision"], f"{r['peak_rss_bytes'] / GIB:.2f} GiB"]
        cells.append(f"{r['tokens_per_second']:,.0f}" if chatterbot else f"{r['mean_step_seconds']:.2f}")
        cells.append(f"{r['tokens_per_step']:,.0f}")
        cells += [f"{r['validation_loss']:.4f}"] if chatterbot else []
        for base in bases:
            pair = ratio_table[name].get(f"vs {base}")
            cells.append(f"{pair['peak_rss']:.2f}× / {pair['speed']:.2f}×" if pair else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_group(suite: str, names: list[str], args: argparse.Namespace, model: str) -> dict[str, dict]:
    results = {}
    for name in names:
        kind, extra = CONTENDERS[suite][name]
        print(f"  {name} ...", flush=True)
        run = run_lorakit if kind == "lorakit" else run_trl_child
        results[name] = run(suite, name, extra, args, model)
        print(f"    {results[name]['status']}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=tuple(CONTENDERS), required=True)
    parser.add_argument("--contenders", help="comma-separated names (default: all of the suite's)")
    parser.add_argument("--shapes", default="360m,1.7b", help=f"shapes suite: comma-separated of {', '.join(SHAPES)}")
    parser.add_argument("--steps", type=int, help="optimizer steps (shapes default 3; chatterbot default 1 epoch)")
    parser.add_argument("--max-train-examples", type=int, help="chatterbot: cap the train split (as lorakit does)")
    parser.add_argument("--model-cache", type=Path, default=Path("/tmp/lorakit-bench-models"))
    parser.add_argument("--out", default="benchmarks/results-scale-up.json", help="JSON results file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--trl-options", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        trl_worker(args)
        return
    if args.suite == "shapes" and args.steps is None:
        args.steps = 3
    names = args.contenders.split(",") if args.contenders else list(CONTENDERS[args.suite])
    unknown = [name for name in names if name not in CONTENDERS[args.suite]]
    if unknown:
        parser.error(f"unknown contenders {unknown}; the {args.suite} suite has {list(CONTENDERS[args.suite])}")
    shapes = args.shapes.split(",")
    if args.suite == "shapes" and not set(shapes) <= set(SHAPES):
        parser.error(f"--shapes takes {list(SHAPES)}, not {shapes}")

    started, load_before = time.time(), os.getloadavg()
    results = {"suite": args.suite, "machine": machine(), "recipe": RECIPE | SUITE_SHAPE[args.suite]}
    results["settings"] = {"steps": args.steps, "max_train_examples": args.max_train_examples, "contenders": names}
    groups: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lorakit-scale-up-") as work:
        args.work = Path(work)
        splits = load_splits(args.max_train_examples if args.suite == "chatterbot" else None)
        write_data(splits, args.work)
        results["data"] = {split: len(examples) for split, examples in splits.items()}
        if args.suite == "chatterbot":
            from lorakit.models import resolve_model

            print(f"{MODEL} on chatterbot:", flush=True)
            groups[MODEL] = {"model": resolve_model(MODEL), "contenders": run_group(args.suite, names, args, MODEL)}
        else:
            args.model_cache.mkdir(parents=True, exist_ok=True)
            for shape in shapes:
                folder = build_shape(shape, args.model_cache)
                print(f"{shape} ({folder}):", flush=True)
                groups[shape] = {"model": str(folder), "shape": SHAPES[shape]}
                groups[shape]["contenders"] = run_group(args.suite, names, args, str(folder))
    for group in groups.values():
        group["ratios"] = ratios(group["contenders"], by_tokens=args.suite == "chatterbot")
    results |= {
        "groups": groups,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": round(time.time() - started, 1),
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    print(
        f"\n{m['cpu']}, {m['cores']} cores, avx512_bf16 {'yes' if m['avx512_bf16'] else 'no'}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + f"; load average {load_before[0]:.1f} before, {results['load_average_after'][0]:.1f} after\n"
    )
    for title, group in groups.items():
        print(markdown(title, group["contenders"], group["ratios"], args.suite == "chatterbot") + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
