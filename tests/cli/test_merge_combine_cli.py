"""`lorakit merge` and `lorakit combine` on tiny local models: what they print, what they write,
and one-line errors with exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adapter_folders import save_adapter_folder, save_base
from lorakit.cli.main import main
from lorakit.lora import read_adapter
from tiny_models import tiny_llama


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bf16 tiny Llama base with two run folders (adapter/ inside), and a BERT classifier run."""
    root = tmp_path_factory.mktemp("cli")
    llama = save_base("llama", root / "llama", dtype=torch.bfloat16)
    bert = save_base("bert", root / "bert")
    save_adapter_folder("llama", llama, root / "run_a" / "adapter", seed=1)
    save_adapter_folder("llama", llama, root / "run_b" / "adapter", seed=2)
    save_adapter_folder("bert", bert, root / "run_cls" / "adapter", seed=3)
    return {"root": root, "a": root / "run_a", "b": root / "run_b", "cls": root / "run_cls"}


def error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"lorakit {command}: error: ")
    return lines[0]


def test_merge_prints_what_it_wrote(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", "--adapter", str(runs["a"]), "--out", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"wrote {tmp_path / 'model'}: ") and "bfloat16" in first
    params = sum(p.numel() for p in tiny_llama().parameters())
    assert f"{params:,} parameters" in first
    assert "model.safetensors" in out and "tokenizer.json" in out
    assert main(["merge", "--adapter", str(runs["a"]), "--out", str(tmp_path / "fp32"), "--dtype", "fp32"]) == 0
    assert "float32" in capsys.readouterr().out.splitlines()[0]


def test_merge_errors_are_one_line_with_status_2(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("keep")
    assert main(["merge", "--adapter", str(runs["a"]), "--out", str(taken)]) == 2
    assert "exists and is not empty; pass --overwrite" in error_line(capsys, "merge")
    assert (taken / "file").read_text() == "keep"
    assert main(["merge", "--adapter", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in error_line(capsys, "merge")
    full = tmp_path / "full_run"
    save_base("bert", full / "model")
    (full / "model" / "lorakit.json").write_text(json.dumps({"task": "classification", "method": "full"}))
    assert main(["merge", "--adapter", str(full), "--out", str(tmp_path / "o")]) == 2
    assert "--method full" in error_line(capsys, "merge")
    assert not (tmp_path / "o").exists()


def test_combine_writes_an_adapter_that_merge_accepts(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mix"
    argv = ["combine", str(runs["a"]), str(runs["b"]), "--weights", "0.5,0.5", "--method", "svd", "--svd-rank", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: svd combination of 0.5·{runs['a']}, 0.5·{runs['b']}" in printed
    assert "rank 2," in printed
    config, _ = read_adapter(out)
    assert config.r == 2
    assert json.loads((out / "lorakit.json").read_text())["combined"]["svd_rank"] == 2
    assert main(["merge", "--adapter", str(out), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("names", "extra", "message"),
    [
        (["a", "b"], ["--weights", "0.5,0.3,0.2"], "--weights has 3 values for 2 adapters"),
        (["a", "b"], ["--svd-rank", "2"], "--svd-rank only applies to --method svd"),
        (["a", "cls"], [], "only adapters of the same base model"),
        (["a"], [], "combine needs at least two adapters"),
    ],
)
def test_combine_errors_are_one_line_with_status_2(
    names: list[str],
    extra: list[str],
    message: str,
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    adapters = [str(runs[name]) for name in names]
    assert main(["combine", *adapters, *extra, "--out", str(tmp_path / "mix")]) == 2
    assert message in error_line(capsys, "combine")
    assert not (tmp_path / "mix").exists()
