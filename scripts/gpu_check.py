"""The GPU check's steps (run it through scripts/gpu_check.sh, which sets the paths up).

Each step runs in its own process with its own time limit; its outcome (passed, failed, skipped
and why), seconds and the tail of its output go into SUMMARY_DIR/gpu-check.md and .json. The
models are random-weight, built here from configs: a 2-layer BERT classifier (hidden 128) and a
2-layer Llama (hidden 256, so each 4-bit weight splits over 2 processes) with a word tokenizer.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = [
    "tests/quant/test_qlora.py",
    "tests/quant/test_nf4_layer.py",
    "tests/lora/test_dtypes_devices.py",
    "tests/models/test_activation_checkpointing.py",
]
WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "a", "film", "plot", "was", "and", "it", "very"]
COUNTRIES = {"france": "paris", "spain": "madrid", "italy": "rome", "japan": "tokyo", "peru": "lima"}
COUNTRIES |= {"chile": "santiago", "kenya": "nairobi", "egypt": "cairo", "india": "delhi", "china": "beijing"}
ASKING = ["what is the capital of", "answer briefly what is the capital of", "tell me the capital of"]
CHATML = (
    "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


def tokenizer(words: list[str], chat: bool):
    from tiny_models import word_tokenizer

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate([*specials, *dict.fromkeys(words)])}
    return word_tokenizer(
        vocab,
        CHATML if chat else None,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


def build_models(work: Path) -> dict[str, Path]:
    """The two random models, their data files, and the paths to them."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    rng = random.Random(0)
    words = tokenizer(WORDS, chat=False)
    words.save_pretrained(work / "bert")
    bert = BertConfig(vocab_size=len(words), hidden_size=128, num_hidden_layers=2, num_attention_heads=4)
    BertForSequenceClassification(bert).save_pretrained(work / "bert")
    rows = ["review,sentiment"]
    for _ in range(400):
        label = rng.choice(["pos", "neg"])
        cue = rng.choice(WORDS[:3] if label == "pos" else WORDS[3:6])
        rows.append(" ".join([*rng.sample(WORDS[6:], 4), cue]) + f",{label}")
    (work / "reviews.csv").write_text("\n".join(rows) + "\n")

    qa_words = [*" ".join(ASKING).split(), "user", "assistant", *COUNTRIES, *COUNTRIES.values()]
    qa = tokenizer(qa_words, chat=True)
    qa.save_pretrained(work / "llama")
    llama = LlamaConfig(
        vocab_size=len(qa),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=qa.pad_token_id,
        bos_token_id=qa.bos_token_id,
        eos_token_id=qa.eos_token_id,
    )
    LlamaForCausalLM(llama).save_pretrained(work / "llama")
    lines = []
    for _ in range(240):
        country = rng.choice(list(COUNTRIES))
        prompt, response = f"{rng.choice(ASKING)} {country}", f"the capital of {country} is {COUNTRIES[country]}"
        lines.append(json.dumps({"prompt": prompt, "response": response}))
    (work / "capitals.jsonl").write_text("\n".join(lines) + "\n")
    return {
        "bert": work / "bert",
        "reviews": work / "reviews.csv",
        "llama": work / "llama",
        "qa": work / "capitals.jsonl",
    }


def train(paths: dict[str, Path], work: Path, name: str, *flags: str) -> list[str]:
    """`lorakit train` on the classifier (name "classify…") or the causal LM, 20 steps."""
    if name.startswith("classify"):
        data = ["--model", str(paths["bert"]), "--data", str(paths["reviews"])]
        data += ["--text-column", "review", "--label-column", "sentiment"]
    else:
        data = ["--task", "causal-lm", "--model", str(paths["llama"]), "--data", str(paths["qa"])]
        data += ["--generation-samples", "2", "--max-new-tokens", "6", "--target-modules", "all-linear"]
    common = ["--max-steps", "20", "--batch-size", "8", "--max-length", "48", "--quiet"]
    return ["-m", "lorakit.cli.main", "train", *data, *common, "--output-dir", str(work / name), *flags]


def steps(paths: dict[str, Path], work: Path, gpus: int, bnb: bool) -> list[tuple[str, int, list[str] | str]]:
    """(name, seconds allowed, python arguments — or the reason the step is skipped)."""
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", str(gpus)]
    several = f"needs 2 or more GPUs; this machine has {gpus}"
    serve = [str(ROOT / "benchmarks" / "serve_mixed.py"), "--device", "cuda", "--random-weights", "--rounds", "3"]
    serve += ["--adapters", "1", "32", "--batch", "32", "--runs", "smollm:qv:bf16:prefill", "smollm:qv:bf16:decode"]
    serve += ["--out", str(work / "serve-mixed-cuda.json")]
    return [
        ("CUDA-only tests", 150, ["-m", "pytest", "-q", "-rs", *CUDA_TESTS]),
        ("bf16 classification", 60, train(paths, work, "classify-bf16", "--precision", "bf16")),
        ("QLoRA nf4 (torchao)", 60, train(paths, work, "qlora-nf4", "--quantize", "nf4")),
        (
            "QLoRA bnb-nf4 (bitsandbytes)",
            60,
            train(paths, work, "qlora-bnb", "--quantize", "bnb-nf4") if bnb else "bitsandbytes is not installed",
        ),
        ("DDP", 90, [*torchrun, *train(paths, work, "ddp")[1:]] if gpus > 1 else several),
        ("FSDP", 90, [*torchrun, *train(paths, work, "fsdp", "--fsdp")[1:]] if gpus > 1 else several),
        ("mixed-adapter serving benchmark", 120, serve),
    ]


def run_step(name: str, seconds: int, arguments: list[str] | str) -> dict:
    if isinstance(arguments, str):
        return {"step": name, "outcome": "skipped", "why": arguments, "seconds": 0.0, "tail": ""}
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=seconds)
        outcome = "passed" if done.returncode == 0 else f"failed (exit {done.returncode})"
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as expired:
        outcome = f"failed (over {seconds} s)"
        output = (expired.stdout or b"").decode() + (expired.stderr or b"").decode()
    seconds_taken = round(time.perf_counter() - started, 1)
    return {"step": name, "outcome": outcome, "seconds": seconds_taken, "tail": output[-1500:]}


def main() -> None:
    import importlib.util

    import torch

    summary_dir = Path(sys.argv[1])
    if not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA GPU here; run it on a machine with one")
    gpus = torch.cuda.device_count()
    machine = {
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    results = []
    with tempfile.TemporaryDirectory(prefix="lorakit-gpu-check-") as folder:
        work = Path(folder)
        paths = build_models(work)
        for name, seconds, arguments in steps(paths, work, gpus, importlib.util.find_spec("bitsandbytes") is not None):
            results.append(run_step(name, seconds, arguments))
            print(f"{name}: {results[-1]['outcome']} ({results[-1]['seconds']} s)", flush=True)
        serving = work / "serve-mixed-cuda.json"
        served = json.loads(serving.read_text()) if serving.exists() else None
    report = {"machine": machine, "steps": results, "serve_mixed": served}
    (summary_dir / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n")
    title = f"# lorakit GPU check: {', '.join(machine['gpus'])} (torch {machine['torch']}, CUDA {machine['cuda']})"
    lines = [title, "", "| step | outcome | seconds |", "|---|---|---|"]
    for r in results:
        why = f": {r['why']}" if r.get("why") else ""
        lines.append(f"| {r['step']} | {r['outcome']}{why} | {r['seconds']} |")
    for r in results:
        if r["outcome"].startswith("failed"):
            lines += ["", f"## {r['step']}", "```", r["tail"], "```"]
    (summary_dir / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(1 if any(r["outcome"].startswith("failed") for r in results) else 0)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
