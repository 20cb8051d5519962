"""Causal-LM and seq2seq training runs on tiny local models: outputs, learning, generate, QLoRA, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lorakit.cli.main import main


def generative_args(model: Path, data: Path, out: Path, task: str, *extra: str) -> list[str]:
    return [
        "train",
        "--task",
        task,
        "--model",
        str(model),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--epochs",
        "4",
        "--lr",
        "1e-2",
        "--target-modules",
        "all-linear",
        "--batch-size",
        "16",
        "--max-length",
        "48",
        "--precision",
        "fp32",
        "--generation-samples",
        "3",
        "--max-new-tokens",
        "8",
        "--quiet",
        *extra,
    ]


def last_json_line(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def train_loss_falls(run: Path) -> bool:
    """The training loss of the last logged step is well below the first one's. (Validation
    questions are never in training — the loader splits by question — and a tiny random model
    mostly memorises, so its validation loss is not the signal here; the real SmolLM2 run is.)"""
    losses = [entry["loss"] for entry in json.loads((run / "history.json").read_text())["train"]]
    return len(losses) >= 3 and losses[-1] < 0.8 * losses[0]


@pytest.fixture(scope="module")
def causal_run(tiny_causal_dir, capitals_jsonl, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("causal") / "run"
    assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", "--r", "8")) == 0
    return out


def test_causal_run_learns_and_writes_its_outputs(causal_run):
    metrics = json.loads((causal_run / "metrics.json").read_text())
    assert metrics["task"] == "causal-lm"
    assert train_loss_falls(causal_run)
    evals = json.loads((causal_run / "history.json").read_text())["eval"]
    # One validation before training (the base's loss), then one per epoch; the loss falls from it.
    assert evals[0]["step"] == 0 and len(evals) == 5
    assert min(entry["loss"] for entry in evals[1:]) < evals[0]["loss"]
    assert metrics["perplexity"] == pytest.approx(2.718281828 ** metrics["loss"], rel=1e-6)
    assert metrics["test_tokens"] > 0 and metrics["adapter_bytes"] > 0
    # The held-out generations move toward the reference answers.
    assert metrics["sample_f1_after"] > metrics["sample_f1_before"]
    assert (causal_run / "generations.json").is_file()
    assert {p.name for p in (causal_run / "plots").iterdir()} == {"loss.png", "perplexity.png"}
    info = json.loads((causal_run / "adapter" / "lorakit.json").read_text())
    assert info["task"] == "causal-lm" and info["quantize"] is None
    adapter_config = json.loads((causal_run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "CAUSAL_LM"
    assert adapter_config["target_modules"] == "all-linear"
    report = (causal_run / "report.html").read_text()
    assert "before training" in report and "after training" in report and "the capital of" in report


def test_generate_answers_with_the_trained_adapter(causal_run, capsys):
    assert main(["generate", "--adapter", str(causal_run), "--json", "what is the capital of japan"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["prompt"] == "what is the capital of japan"
    assert line["completion"].startswith("the capital of")


def test_generate_streams_tokens_and_can_skip_the_adapter(causal_run, capsys):
    assert main(["generate", "--adapter", str(causal_run / "adapter"), "what is the capital of peru"]) == 0
    streamed = capsys.readouterr().out
    assert "the capital of" in streamed
    assert (
        main(["generate", "--adapter", str(causal_run), "--no-adapter", "--json", "what is the capital of peru"]) == 0
    )
    untrained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["completion"]
    assert not untrained.startswith("the capital of")


@pytest.mark.parametrize("base", ["tiny_t5_dir", "tiny_bart_dir"])
def test_seq2seq_run(base, capitals_jsonl, tmp_path, capsys, request):
    """T5 and BART, the two seq2seq families, train, score and generate through one code path."""
    out = tmp_path / "run"
    assert main(generative_args(request.getfixturevalue(base), capitals_jsonl, out, "seq2seq")) == 0
    assert train_loss_falls(out)
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["task_type"] == "SEQ_2_SEQ_LM"
    sample = json.loads((out / "generations.json").read_text())[0]
    capsys.readouterr()
    assert main(["generate", "--adapter", str(out), "--json", sample["prompt"]]) == 0
    assert last_json_line(capsys.readouterr().out)["completion"] == sample["after training"]


def test_qlora_run_trains_on_a_4bit_base(tiny_causal_dir, capitals_jsonl, tmp_path):
    out = tmp_path / "run"
    assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", "--quantize", "nf4")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["quantized_linears"] > 0
    assert metrics["quantized_linear_bytes"] <= 0.16 * metrics["fp32_bytes"]
    assert train_loss_falls(out)
    assert json.loads((out / "adapter" / "lorakit.json").read_text())["quantize"] == "nf4"


def test_packed_run_trains_on_fewer_fuller_rows(tiny_causal_dir, capitals_jsonl, tmp_path):
    out = tmp_path / "run"
    extra = ["--packing", "--generation-samples", "0"]
    assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # ~20-token examples packed into 48-token rows: about half the optimizer steps of the unpacked run.
    assert metrics["steps"] < 0.6 * 4 * -(-metrics["train_examples"] // 16)
    assert metrics["tokens_per_second"] > 0 and "sample_f1_after" not in metrics
    assert train_loss_falls(out)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--prompt-column", "question"], "question"),
        (["--task", "seq2seq", "--packing"], "packing applies to task causal-lm only"),
        (["--quantize", "nf4", "--method", "full"], "cannot be combined with method full"),
        (["--max-length", "4"], "raise --max-length"),
    ],
)
def test_bad_generative_runs_fail_with_one_line(tiny_causal_dir, capitals_jsonl, tmp_path, capsys, extra, message):
    args = generative_args(tiny_causal_dir, capitals_jsonl, tmp_path / "run", "causal-lm")
    assert main([*args, *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1


def test_seq2seq_needs_a_model(capsys):
    assert main(["train", "--task", "seq2seq"]) == 2
    assert "pass --model" in capsys.readouterr().err


def test_generate_refuses_a_classification_adapter(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    from tiny_runs import tiny_flags

    out = tmp_path / "cls"
    assert (
        main(["train", *tiny_flags(tiny_classifier_dir, sentiment_csv), "--output-dir", str(out), "--max-steps", "2"])
        == 0
    )
    capsys.readouterr()
    assert main(["generate", "--adapter", str(out), "hello"]) == 2
    assert "use lorakit predict" in capsys.readouterr().err


def _history(run: Path) -> dict:
    return json.loads((run / "history.json").read_text())


def test_checkpointing_trains_exactly_like_keeping_activations(tiny_causal_dir, capitals_jsonl, tmp_path):
    """Same seed, same batches: recomputing activations (dropout replayed) changes no number."""
    runs = {}
    for mode in ("off", "on"):
        out = tmp_path / mode
        extra = ["--gradient-checkpointing", mode, "--max-steps", "4", "--log-steps", "1", "--generation-samples", "0"]
        assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra)) == 0
        runs[mode] = out
        assert json.loads((out / "metrics.json").read_text())["gradient_checkpointing"] is (mode == "on")
    plain, checked = _history(runs["off"]), _history(runs["on"])
    for name in ("train", "eval"):
        assert len(plain[name]) == len(checked[name]) > 1
        for a, b in zip(plain[name], checked[name], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)


def test_unchecked_pieces_train_like_whole_micro_batches(tiny_causal_dir, capitals_jsonl, tmp_path):
    """Micro-batches of 16 rows cut into pieces of ≤ 64 tokens (1–4 rows of ≤ 48): the same losses
    (no dropout, so rows drawing masks in another order cannot differ), recorded in the run."""
    runs = {}
    for pieces in ("0", "64"):
        out = tmp_path / pieces
        extra = ["--gradient-checkpointing", "on", "--piece-tokens", pieces, "--lora-dropout", "0"]
        extra += ["--max-steps", "4", "--log-steps", "1", "--generation-samples", "0"]
        assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra)) == 0
        runs[pieces] = _history(out)
        assert json.loads((out / "metrics.json").read_text())["piece_tokens"] == int(pieces)
        assert f"piece_tokens: {pieces}\n" in (out / "config.yaml").read_text()
    for name in ("train", "eval"):
        for a, b in zip(runs["0"][name], runs["64"][name], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)


def test_one_qlora_step_with_checkpointing(tiny_causal_dir, capitals_jsonl, tmp_path, capsys):
    out = tmp_path / "run"
    extra = ["--quantize", "nf4", "--gradient-checkpointing", "--max-steps", "1", "--generation-samples", "0"]
    assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gradient_checkpointing"] is True and metrics["quantized_linears"] > 0
    assert metrics["steps"] == 1 and metrics["estimated_peak_memory_bytes"] > 0
    assert "memory: estimated peak memory" in capsys.readouterr().err


def test_a_budget_cuts_the_batch_into_micro_batches(tiny_causal_dir, capitals_jsonl, tmp_path, monkeypatch):
    """A budget the whole batch does not fit (here: estimates of 1 GiB above 4 rows, nothing at
    or below): the planner keeps the effective batch of 16 with the largest micro-batch that fits,
    and records it in config.yaml and metrics.json."""
    from lorakit.train import memory

    real_estimate = memory.estimate

    def over_four_rows_costs_a_gib(footprint, setting, row_tokens, baseline):
        size = 2**30 if setting.micro_batch > 4 else 0
        return replace(real_estimate(footprint, setting, row_tokens, 0), activations=size, working=0, loading=0)

    monkeypatch.setattr(memory, "estimate", over_four_rows_costs_a_gib)
    out = tmp_path / "run"
    extra = ["--max-memory", "512MiB", "--max-steps", "1", "--generation-samples", "0"]
    assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["micro_batch_size"], metrics["gradient_accumulation_steps"]) == (4, 4)
    assert metrics["gradient_checkpointing"] is False
    assert "batch_size: 4\n" in (out / "config.yaml").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-memory", "1MiB"], "cannot fit this run: the smallest setting (micro-batch 1 × 16"),
        (["--max-memory", "lots"], "--max-memory must be a size such as 4GiB"),
        (["--max-length", "1000", "--data", "LONG"], "--max-length 1000 lets through rows of"),
        (["--offload-activations"], "host memory already"),
        (["--piece-tokens", "-8"], "--piece-tokens must be a whole number >= 0"),
    ],
)
def test_memory_requests_that_cannot_work_fail_before_writing(
    tiny_causal_dir, capitals_jsonl, tmp_path, capsys, extra, message
):
    out = tmp_path / "run"
    if "LONG" in extra:  # one answer longer than the tiny model's 128 positions
        long = tmp_path / "long.jsonl"
        answer = " ".join(["paris"] * 200)
        long.write_text(
            capitals_jsonl.read_text() + json.dumps({"prompt": "capital of france", "response": answer}) + "\n"
        )
        extra = [str(long) if item == "LONG" else item for item in extra]
    assert main([*generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm"), *extra]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and error[-1].startswith("lorakit train: error")
    assert not out.exists()


def test_checkpointing_a_model_without_support_is_refused(
    tiny_causal_dir, capitals_jsonl, tmp_path, capsys, monkeypatch
):
    from transformers import LlamaForCausalLM

    monkeypatch.setattr(LlamaForCausalLM, "supports_gradient_checkpointing", False)
    out = tmp_path / "run"
    args = generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", "--gradient-checkpointing", "on")
    assert main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("data:")]
    assert len(lines) == 1 and "do not support activation checkpointing" in lines[0], lines
    assert not out.exists()


def test_ddp_with_checkpointing_and_the_chunked_loss(tiny_causal_dir, capitals_jsonl, tmp_path):
    """Two gloo processes: the loss (body and head called apart) runs inside the DDP-wrapped
    module, blocks are checkpointed, and the run trains and writes once."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547"]
    extra = ["--gradient-checkpointing", "on", "--batch-size", "8", "--generation-samples", "0", "--epochs", "6"]
    args = generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*launcher, "-m", "lorakit.cli.main", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["gradient_checkpointing"] is True
    assert result.stderr.count("memory: estimated peak memory") == 1  # the main process plans and says so
    assert train_loss_falls(out)


def test_a_tokenizer_without_a_pad_token_pads_with_eos(tiny_causal_dir, capitals_jsonl, tmp_path):
    """Many causal LMs ship without a pad token; padding is masked, so eos stands in for it."""
    import shutil

    from transformers import AutoTokenizer

    model = tmp_path / "no-pad"
    shutil.copytree(tiny_causal_dir, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(model)
    assert AutoTokenizer.from_pretrained(model).pad_token is None
    out = tmp_path / "run"
    extra = ["--max-steps", "2", "--generation-samples", "0"]
    assert main(generative_args(model, capitals_jsonl, out, "causal-lm", *extra)) == 0
