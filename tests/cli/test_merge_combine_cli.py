"""`lorakit merge` and `lorakit combine` on tiny local models: what they print, what they write,
and one-line errors with exit status 2 (also for an --out that cannot be written, or a disk that
fills while writing: nothing half-written is left)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from transformers import modeling_utils

from adapter_folders import save_adapter_folder, save_base
from lorakit.cli.main import main
from lorakit.export import combine as combine_module
from lorakit.export import merge as merge_module
from lorakit.lora import io as lora_io
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


def write_argv(command: str, runs: dict[str, Path], out: Path) -> list[str]:
    """`lorakit merge` of run a, or `lorakit combine` of runs a and b, into `out`."""
    sources = ["--adapter", str(runs["a"])] if command == "merge" else [str(runs["a"]), str(runs["b"])]
    return [command, *sources, "--out", str(out)]


@pytest.mark.parametrize("command", ["merge", "combine"])
def test_disk_full_keeps_the_previous_folder_and_leaves_nothing(
    command: str, runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    out = tmp_path / "out"
    assert main(write_argv(command, runs, out)) == 0
    before = {file.name: file.read_bytes() for file in out.iterdir()}
    capsys.readouterr()
    # What safetensors raises on a full disk, writing the model's weights or the adapter's.
    full = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    writer = (modeling_utils, "safe_save_file") if command == "merge" else (lora_io, "save_file")
    monkeypatch.setattr(*writer, lambda *args, **kwargs: _raise(full))
    assert main([*write_argv(command, runs, out), "--overwrite"]) == 2
    assert error_line(capsys, command) == (
        f"lorakit {command}: error: cannot write {out}: no space left on the device; free some space or write to "
        "another disk"
    )
    assert {file.name: file.read_bytes() for file in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging folder is left behind"


@pytest.mark.parametrize("command", ["merge", "combine"])
@pytest.mark.parametrize("case", ["a-file", "under-a-file", "read-only", "permission-denied"])
def test_an_unwritable_out_is_refused_before_any_work(
    command: str, case: str, runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    (tmp_path / "a_file").write_text("keep")
    out = {"a-file": tmp_path / "a_file", "under-a-file": tmp_path / "a_file" / "out"}.get(case, tmp_path / "out")
    expected = {
        "a-file": f"output folder {out} is a file; pass a folder path",
        "under-a-file": f"output folder {out} cannot be created: {tmp_path / 'a_file'} is a file; choose another path",
        "read-only": f"cannot write {out}: the file system is read-only; write to a writable disk",
        "permission-denied": f"cannot write {out}: permission denied; write to a folder you may write to",
    }[case]
    if case in ("read-only", "permission-denied"):  # tests run as any user, root too: the check is simulated
        monkeypatch.setattr(os, "access", lambda path, how: False)
        flags = os.ST_RDONLY if case == "read-only" else 0
        monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=flags))
    monkeypatch.setattr(combine_module, "load_base_model", _not_loaded)
    monkeypatch.setattr(merge_module, "merged_model", _not_loaded)
    assert main(write_argv(command, runs, out)) == 2
    assert error_line(capsys, command) == f"lorakit {command}: error: {expected}"
    assert (tmp_path / "a_file").read_text() == "keep"


def _not_loaded(*args, **kwargs):
    raise AssertionError("the model was loaded before the output was checked")


def _raise(error: BaseException):
    raise error
