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
