"""`lorakit compare` and `lorakit sweep` on the tiny local model."""

from __future__ import annotations

import json

import pytest
from tiny_runs import tiny_flags

from lorakit.cli.main import main


def flags(model, data) -> list[str]:
    return [*tiny_flags(model, data), "--max-steps", "6"]


def test_compare_trains_lora_and_full_and_tabulates(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--output-dir", str(out), *flags(tiny_classifier_dir, sentiment_csv)]) == 0
    printed = capsys.readouterr().out
    assert "LoRA keeps" in printed and "% of its trainable parameters" in printed
    rows = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in rows] == ["LoRA", "full fine-tuning"]
    lora, full = rows
    assert lora["trainable_params"] < full["trainable_params"] == full["trainable_params"]
    assert lora["adapter_bytes"] < full["adapter_bytes"]
    assert json.loads((out / "full" / "metrics.json").read_text())["method"] == "full"
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2


def test_sweep_runs_the_grid_and_reuses_finished_runs(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--r",
        "2,4",
        "--lora-alpha",
        "2r",
        "--lora-dropout",
        "0",
        "--output-dir",
        str(out),
        *flags(tiny_classifier_dir, sentiment_csv),
    ]
    assert main(args) == 0
    rows = json.loads((out / "results.json").read_text())
    assert sorted(r["name"] for r in rows) == ["r2-a4-d0", "r4-a8-d0"]
    by_rank = {r["r"]: r for r in rows}
    assert by_rank[4]["trainable_params"] > by_rank[2]["trainable_params"]
    adapter = json.loads((out / "r4-a8-d0" / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 8)
    finished = (out / "r2-a4-d0" / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0  # a second call reuses both runs
    assert (out / "r2-a4-d0" / "metrics.json").stat().st_mtime_ns == finished


def test_sweep_rejects_a_bad_grid_before_training(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    args = ["sweep", "--r", "4,0", "--output-dir", str(tmp_path / "s"), *flags(tiny_classifier_dir, sentiment_csv)]
    assert main(args) == 2
    assert "r must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["compare", "sweep"])
def test_an_output_dir_that_is_a_file_is_refused_before_training(
    command, tiny_classifier_dir, sentiment_csv, tmp_path, capsys
):
    a_file = tmp_path / "results"
    a_file.write_text("keep")
    assert main([command, "--output-dir", str(a_file), *flags(tiny_classifier_dir, sentiment_csv)]) == 2
    assert capsys.readouterr().err == f"lorakit {command}: error: --output-dir {a_file} is a file; pass a folder path\n"
    assert a_file.read_text() == "keep"
