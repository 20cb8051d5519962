"""A real, short LoRA run on the packaged MiniLM and rotten-tomatoes reviews: it learns."""

from __future__ import annotations

import json

import pytest

from lorakit.cli.main import main


@pytest.mark.packaged
def test_short_minilm_run_learns_sentiment(tmp_path, capsys):
    out = tmp_path / "run"
    # 1,200 reviews, 2 epochs (150 steps): a few minutes' worth of the default recipe, scaled down.
    args = [
        "train",
        "--max-train-examples",
        "1200",
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--output-dir",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_examples"] == 1275
    assert metrics["accuracy"] >= 0.70, metrics["accuracy"]  # chance is 0.58 (the majority class)
    assert metrics["trainable_params"] == 74_498 and metrics["total_params"] == 22_788_484
    history = json.loads((out / "history.json").read_text())
    assert history["eval"][-1]["loss"] < history["eval"][0]["loss"] < 0.69  # below chance-level cross-entropy
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                "--adapter",
                str(out),
                "A warm, funny and beautifully acted film.",
                "Tedious, clumsy and painfully unfunny.",
            ]
        )
        == 0
    )
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["fresh", "rotten"]


@pytest.mark.packaged
def test_short_smollm2_run_lowers_held_out_loss(tmp_path, capsys):
    """A few LoRA steps on the packaged SmolLM2 and chatterbot Q&A: the validation loss falls below
    the base model's (measured before the first step), and the adapter generates."""
    out = tmp_path / "run"
    args = ["train", "--task", "causal-lm", "--max-steps", "12", "--batch-size", "8", "--lr", "1e-3"]
    args += ["--generation-samples", "2", "--max-new-tokens", "12", "--output-dir", str(out), "--quiet"]
    assert main(args) == 0
    evals = json.loads((out / "history.json").read_text())["eval"]
    assert evals[0]["step"] == 0 and evals[-1]["loss"] < evals[0]["loss"] - 0.1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "SmolLM2-135M-Instruct" and metrics["test_examples"] == 90
    assert metrics["adapter_bytes"] < 2 * 1024 * 1024  # q/v r=8 on 30 layers: ~1.8 MiB
    capsys.readouterr()
    assert main(["generate", "--adapter", str(out), "--max-new-tokens", "8", "--json", "Hello"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["completion"]
