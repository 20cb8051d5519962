"""End-to-end training runs on a tiny local model: outputs, full FT, errors (kill -9 and other faults:
test_resume_faults.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import tiny_flags
from transformers import AutoModelForSequenceClassification

from lorakit.cli.main import main


def train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", *tiny_flags(model, data), "--output-dir", str(out), "--epochs", "2", "--lr", "5e-3", *extra]


def test_run_writes_adapter_metrics_plots_and_report(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out, "--r", "4", "--target-modules", "query,value")) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and str(out / "report.html") in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["label_names"] == ["neg", "pos"]
    assert metrics["trainable_params"] < metrics["total_params"]
    assert metrics["adapter_bytes"] == sum(f.stat().st_size for f in (out / "adapter").iterdir())
    assert metrics["tokens_per_second"] > 0 and metrics["peak_memory_bytes"] > 0
    for key in ("accuracy", "macro_f1", "loss", "per_class", "confusion_matrix", "train_seconds"):
        assert key in metrics
    assert sum(map(sum, metrics["confusion_matrix"])) == metrics["test_examples"]
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["eval"]] == [1.0, 2.0]
    assert {p.name for p in (out / "plots").iterdir()} == {"loss.png", "accuracy.png", "confusion_matrix.png"}
    assert (out / "adapter" / "adapter_config.json").is_file()
    info = json.loads((out / "adapter" / "lorakit.json").read_text())
    assert info["label_names"] == ["neg", "pos"]
    report = (out / "report.html").read_text()
    assert "data:image/png;base64," in report
    resolved = (out / "config.yaml").read_text()
    assert "r: 4" in resolved and "lr: 0.005" in resolved


def test_config_file_with_flag_override(tiny_classifier_dir, sentiment_csv, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_classifier_dir}\ndata: {sentiment_csv}\ntext-column: review\nlabel_column: sentiment\n"
        "r: 2\nmax_steps: 3\nbatch_size: 8\nprecision: fp32\nquiet: true\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--r", "3", "--output-dir", str(out)]) == 0
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == 3
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3


def test_full_fine_tuning_writes_a_transformers_model(tiny_classifier_dir, sentiment_csv, tmp_path):
    out = tmp_path / "full"
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out, "--method", "full", "--max-steps", "4")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "full" and metrics["trainable_params"] == metrics["total_params"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_predict_and_eval_on_a_trained_run(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    # This tiny random BERT needs ~3 epochs at a high rate before it separates the classes.
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out, "--epochs", "4", "--lr", "1e-2")) == 0
    capsys.readouterr()
    assert main(["predict", "--adapter", str(out), "--json", "good fun film", "awful dull plot"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == ["pos", "neg"]
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    metrics_file = tmp_path / "eval.json"
    assert (
        main(
            [
                "eval",
                "--adapter",
                str(out / "adapter"),
                "--data",
                str(sentiment_csv),
                "--text-column",
                "review",
                "--label-column",
                "sentiment",
                "--output",
                str(metrics_file),
            ]
        )
        == 0
    )
    evaluated = json.loads(metrics_file.read_text())
    assert evaluated["examples"] == 320 and evaluated["accuracy"] > 0.9


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--label-column", "stars"), "stars"),
        (("--lr", "2"), "lr must be a number in (0, 1)"),
        (("--r", "0"), "r must be a positive integer"),
        (("--precision", "fp16"), "fp16 needs a CUDA device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tiny_classifier_dir, sentiment_csv, tmp_path, capsys, extra, message):
    args = train_args(tiny_classifier_dir, sentiment_csv, tmp_path / "run", *extra)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_bad_config_files_and_resume_targets(tmp_path, capsys):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("r: [1, 2\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("rank: 8\n")
    for args, message in [
        (["train", "--config", str(bad_yaml)], "not valid YAML"),
        (["train", "--config", str(unknown)], "unknown field(s) rank"),
        (["train", "--resume", str(tmp_path)], "not a lorakit run folder"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_existing_run_folder_is_not_overwritten(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out, "--max-steps", "2")) == 0
    before = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out, "--max-steps", "2")) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == before


def test_ddp_with_two_processes_trains_and_writes_once(tiny_classifier_dir, sentiment_csv, tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on a CPU machine: torchrun + gloo DDP."""
    out = tmp_path / "ddp"
    launcher = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
        "-m",
        "lorakit.cli.main",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = train_args(tiny_classifier_dir, sentiment_csv, out, "--epochs", "4", "--lr", "1e-2")
    result = subprocess.run(launcher + args, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test accuracy") == 1  # only the main process reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    # 256 training examples, 8 per batch and process, 2 processes → 16 steps per epoch.
    assert metrics["steps"] == 64
    assert metrics["accuracy"] >= 0.75
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "lorakit.json",
    ]


def test_eval_scores_every_row_of_a_small_file_and_rejects_unknown_labels(
    tiny_classifier_dir, sentiment_csv, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out, "--max-steps", "2")) == 0
    capsys.readouterr()
    small = tmp_path / "three.csv"
    small.write_text("review,sentiment\ngood fun,pos\nsuperb film,pos\nlovely story,pos\n")
    assert (
        main(
            [
                "eval",
                "--adapter",
                str(out),
                "--data",
                str(small),
                "--text-column",
                "review",
                "--label-column",
                "sentiment",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["examples"] == 3
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("review,sentiment\ngood fun,pos\ndull plot,meh\n")
    assert (
        main(
            [
                "eval",
                "--adapter",
                str(out),
                "--data",
                str(unknown),
                "--text-column",
                "review",
                "--label-column",
                "sentiment",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "'meh'" in err and "were not in training" in err and err.count("\n") == 1


def test_gradient_accumulation_takes_one_step_per_group(tiny_classifier_dir, sentiment_csv, tmp_path):
    out = tmp_path / "accumulate"
    args = train_args(tiny_classifier_dir, sentiment_csv, out, "--gradient-accumulation-steps", "3", "--epochs", "1")
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 11  # 256 examples / 8 = 32 batches per epoch → ceil(32 / 3) optimizer steps
    history = json.loads((out / "history.json").read_text())
    assert all(0 < entry["loss"] < 2 for entry in history["train"])
