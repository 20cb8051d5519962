"""lorakit against PEFT + transformers `Trainer` on the seed job: MiniLM, rotten-tomatoes, LoRA
r=8, alpha=32, query/value, dropout 0.1, batch 16, max_length 256, lr 5e-4.

Three contenders, each in its own fresh process (so peak memory is that run's alone), trained
for the same number of optimizer steps on the same data:

  seed          PEFT + Trainer as the seed recipe writes it: every text padded to 256, fp32
  trainer-tuned PEFT + Trainer tuned: dynamic padding, train_sampling_strategy="group_by_length", bf16
  lorakit       `lorakit.train.loop.train` with its defaults (length-grouped dynamic padding,
                bf16 autocast with the frozen base stored in bf16, last layer on [CLS] only)
  lorakit-all-tokens  the same with `first_token_only=False` (the last layer on every token), to
                measure that shortcut in the same run

Throughput is real (non-padding) tokens per second of training steps; time runs from the start
of the first step to the end of the last, data loading and evaluation excluded. Peak memory is
the process's peak resident set size. With --accuracy the tuned Trainer and lorakit also train
the full 3 epochs and report test accuracy.

    python benchmarks/classification_speed.py [--steps 100] [--repeats 3] [--accuracy] [--out BENCH.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

RECIPE = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.1, "batch_size": 16, "max_length": 256, "lr": 5e-4, "seed": 42}
CONTENDERS = ("seed", "trainer-tuned", "lorakit", "lorakit-all-tokens")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_trainer(mode: str, steps: int | None) -> dict:
    """PEFT + Trainer; `steps` None trains 3 epochs and evaluates on the test split."""
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from lorakit.data import load_classification_data, tokenize_split
    from lorakit.models import resolve_model

    path = resolve_model("all-MiniLM-L6-v2")
    data = load_classification_data("rotten-tomatoes", seed=RECIPE["seed"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = tokenize_split(tokenizer, data.train, RECIPE["max_length"])
    test = tokenize_split(tokenizer, data.test, RECIPE["max_length"])
    seed_recipe = mode == "seed"
    collator = DataCollatorWithPadding(
        tokenizer, padding="max_length" if seed_recipe else "longest", max_length=RECIPE["max_length"]
    )
    counter = {"tokens": 0}

    def counting_collator(features):
        batch = collator(features)
        counter["tokens"] += int(batch["attention_mask"].sum())
        return batch

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.start = self.end = None
            self.tokens_at_start = 0

        def on_step_begin(self, args, state, control, **kwargs):
            if self.start is None:
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    torch.manual_seed(RECIPE["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(
        model,
        LoraConfig(
            r=RECIPE["r"],
            lora_alpha=RECIPE["lora_alpha"],
            lora_dropout=RECIPE["lora_dropout"],
            target_modules=["query", "value"],
            task_type="SEQ_CLS",
        ),
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=RECIPE["batch_size"],
            learning_rate=RECIPE["lr"],
            num_train_epochs=3,
            max_steps=steps or -1,
            weight_decay=0.01,
            warmup_steps=0.06,  # a float below 1 is a ratio of the total steps
            lr_scheduler_type="linear",
            max_grad_norm=1.0,
            logging_steps=10**6,
            save_strategy="no",
            eval_strategy="no",
            report_to=[],
            seed=RECIPE["seed"],
            dataloader_num_workers=0,
            bf16=not seed_recipe,
            use_cpu=not torch.cuda.is_available(),
            train_sampling_strategy="random" if seed_recipe else "group_by_length",
            per_device_eval_batch_size=32,
            disable_tqdm=True,
        )
        clock = StepClock()
        trainer = Trainer(
            model=model, args=args, train_dataset=train, data_collator=counting_collator, callbacks=[clock]
        )
        trainer.train()
        result = {"seconds": clock.end - clock.start, "tokens": counter["tokens"], "steps": trainer.state.global_step}
        if steps is None:
            # With group_by_length the Trainer predicts in its own order: compare with the labels it returns.
            predicted = trainer.predict(test)
            logits = predicted.predictions[0] if isinstance(predicted.predictions, tuple) else predicted.predictions
            result["accuracy"] = float((np.argmax(logits, axis=1) == predicted.label_ids).mean())
    result["peak_memory_bytes"] = peak_rss()
    return result


def run_lorakit(steps: int | None, first_token_only: bool = True) -> dict:
    from lorakit.train.config import TrainConfig
    from lorakit.train.loop import train

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            output_dir=f"{out}/run",
            max_steps=steps,
            quiet=True,
            seed=RECIPE["seed"],
            checkpoint_steps=10**6,
            eval_steps=10**6 if steps else None,
            first_token_only=first_token_only,
        )
        metrics = train(config).metrics
    result = {
        "seconds": metrics["train_seconds"],
        "tokens": metrics["tokens_per_second"] * metrics["train_seconds"],
        "steps": metrics["steps"],
        "peak_memory_bytes": peak_rss(),
    }
    if steps is None:
        result["accuracy"] = metrics["accuracy"]
    return result


def worker(mode: str, steps: int | None) -> None:
    if mode.startswith("lorakit"):
        result = run_lorakit(steps, first_token_only=mode == "lorakit")
    else:
        result = run_trainer(mode, steps)
    result["tokens_per_second"] = result["tokens"] / result["seconds"]
    print("RESULT " + json.dumps(result))


def spawn(mode: str, steps: int | None) -> dict:
    command = [sys.executable, __file__, "--worker", mode] + (["--steps", str(steps)] if steps else ["--full"])
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    if finished.returncode != 0 or not lines:
        raise SystemExit(f"{mode} failed:\n{finished.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default 100)")
    parser.add_argument("--seed-steps", type=int, default=30, help="steps of the slow seed recipe (default 30)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of the fast three (default 3)")
    parser.add_argument("--accuracy", action="store_true", help="also train 3 full epochs (tuned Trainer, lorakit)")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="write all results as JSON here")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, None if args.full else args.steps)
        return
    runs: dict[str, list[dict]] = {mode: [] for mode in CONTENDERS}
    runs["seed"].append(spawn("seed", args.seed_steps))
    for _ in range(args.repeats):  # interleaved, so drift in machine load hits all alike
        for mode in CONTENDERS[1:]:
            runs[mode].append(spawn(mode, args.steps))
    speed = {
        mode: {key: statistics.median([r[key] for r in results]) for key in ("tokens_per_second", "peak_memory_bytes")}
        | {"runs": results}
        for mode, results in runs.items()
    }
    results = {"throughput": speed, "steps": args.steps, "seed_steps": args.seed_steps, "repeats": args.repeats}
    print(
        f"MiniLM r=8 q/v, rotten-tomatoes, batch 16; median of {args.repeats} interleaved runs of {args.steps} "
        f"steps (seed recipe: 1 run of {args.seed_steps} steps); real tokens/s:"
    )
    for mode in CONTENDERS:
        r = speed[mode]
        each = ", ".join(f"{run['tokens_per_second']:,.0f}" for run in r["runs"])
        print(
            f"  {mode:<18} {r['tokens_per_second']:>9,.0f} tok/s  peak RSS {r['peak_memory_bytes'] / 2**20:,.0f} MiB"
            f"   (runs: {each})"
        )
    lk, tuned, seed = speed["lorakit"], speed["trainer-tuned"], speed["seed"]
    print(
        f"lorakit vs seed recipe: {lk['tokens_per_second'] / seed['tokens_per_second']:.2f}x; "
        f"vs tuned Trainer: {lk['tokens_per_second'] / tuned['tokens_per_second']:.2f}x; "
        f"peak memory vs tuned Trainer: {lk['peak_memory_bytes'] / tuned['peak_memory_bytes']:.2f}x"
    )
    every = speed["lorakit-all-tokens"]
    print(
        f"last layer on [CLS] only vs on every token: {lk['tokens_per_second'] / every['tokens_per_second']:.2f}x; "
        f"lorakit-all-tokens vs tuned Trainer: {every['tokens_per_second'] / tuned['tokens_per_second']:.2f}x"
    )
    if args.accuracy:
        results["accuracy"] = {mode: spawn(mode, None) for mode in ("trainer-tuned", "lorakit")}
        for mode, r in results["accuracy"].items():
            print(f"  3 epochs, {mode:<14} test accuracy {r['accuracy']:.4f}  ({r['seconds'] / 60:.1f} min training)")
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)


if __name__ == "__main__":
    main()
