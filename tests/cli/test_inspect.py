"""`lorakit inspect` on the real packaged MiniLM and on tiny local models."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from transformers import GPT2Config, GPT2LMHeadModel

from lorakit.cli.main import main

MINILM_LINE = "trainable params: 74,498 || all params: 22,788,484 || trainable%: 0.3269"


@pytest.mark.packaged
def test_inspect_packaged_minilm_prints_peft_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "all-MiniLM-L6-v2", "--target-modules", "query,value", "--r", "8"]) == 0
    out = capsys.readouterr().out
    assert MINILM_LINE in out.splitlines()
    assert "on 12 layers: 73,728 LoRA parameters" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  bert.") or "classifier" in line}
    assert rows["bert.encoder.layer.*.attention.self.query"].rstrip().endswith("lora")
    assert rows["bert.encoder.layer.*.attention.self.key"].rstrip().endswith("384")
    assert "384 → 1536" in rows["bert.encoder.layer.*.intermediate.dense"]
    assert rows["classifier"].rstrip().endswith("trained in full")


@pytest.mark.packaged
def test_console_script_runs_offline_with_default_model() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = os.path.join(os.path.dirname(sys.executable), "lorakit")
    result = subprocess.run([script, "inspect"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert MINILM_LINE in result.stdout


@pytest.fixture
def gpt2_folder(tmp_path):
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    return str(tmp_path / "gpt2")


def test_inspect_conv1d_model_counts_and_preset(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", gpt2_folder, "--r", "4"]) == 0
    out = capsys.readouterr().out
    assert "task CAUSAL_LM" in out
    # GPT-2's preset is c_attn (a Conv1D 32 → 96): 2 layers × (4·32 + 96·4) = 1,024.
    assert "on 2 layers: 1,024 LoRA parameters" in out
    assert "trainable params: 1,024 ||" in out
    assert "transformer.h.*.attn.c_attn" in out and "32 → 96" in out


def test_inspect_all_linear_leaves_lm_head_alone(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", gpt2_folder, "--target-modules", "all-linear"]) == 0
    out = capsys.readouterr().out
    lm_head = next(line for line in out.splitlines() if line.strip().startswith("lm_head"))
    assert not lm_head.rstrip().endswith("lora")
    assert "on 8 layers" in out  # c_attn, c_proj, c_fc, mlp.c_proj in each of 2 blocks


def test_unknown_target_lists_close_matches(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", gpt2_folder, "--target-modules", "c_atn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "'c_atn' matched no Linear layer" in err and "close matches: c_attn" in err


def test_unloadable_model_is_one_line_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "missing"), "--task", "SEQ_CLS"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such model folder or file" in err


def test_plan_estimates_training_memory(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["inspect", gpt2_folder, "--plan", "--batch-size", "4", "--max-length", "32", "--precision", "fp32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    plain, checked, chosen = (line for line in out.splitlines() if "estimated peak memory" in line)
    assert "checkpointing off" in plain and "checkpointing on" in checked and "128 tokens" in plain
    assert chosen.lstrip().startswith("auto (what lorakit train picks): estimated peak memory")


def test_plan_with_an_impossible_budget_is_one_line(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", gpt2_folder, "--plan", "--max-memory", "1MiB"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot fit this run" in err and "micro-batch 1 × 16" in err


def test_bad_rank_is_one_line_error(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", gpt2_folder, "--r", "0"]) == 2
    assert "r must be a positive integer, got 0" in capsys.readouterr().err


def test_no_classes_is_one_line_error(gpt2_folder, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", gpt2_folder, "--num-labels", "0"]) == 2
    assert capsys.readouterr().err == "lorakit inspect: error: --num-labels must be at least 1, got 0\n"
