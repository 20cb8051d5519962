"""Texts that are not UTF-8 (a Latin-1 --file, standard input), a batch size below one and an
`eval --output` that cannot be written are one line with exit status 2; a metrics file is written
whole or not at all."""

from __future__ import annotations

import errno
import io
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapter_folders import save_adapter_folder, save_base
from lorakit import folders
from lorakit.cli.main import main


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT classifier run (labels negative/neutral/positive) and a CSV to score it on."""
    root = tmp_path_factory.mktemp("classifier")
    save_adapter_folder("bert", save_base("bert", root / "bert"), root / "run" / "adapter")
    (root / "data.csv").write_text("text,label\n" + "w3 w4,negative\nw5 w6,positive\n" * 5)
    return root


def error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"lorakit {command}: error: ")
    return lines[0].removeprefix(f"lorakit {command}: error: ")


def test_predict_file_that_is_not_utf8(classifier: Path, tmp_path: Path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("a good film\nun café\n".encode("latin-1"))
    assert main(["predict", "--adapter", str(classifier / "run"), "--file", str(latin1)]) == 2
    assert error_line(capsys, "predict") == (
        "latin1.txt is not UTF-8 text (undecodable byte at position 18); re-save it as UTF-8"
    )


@pytest.mark.parametrize("command", ["predict", "generate"])
def test_standard_input_that_is_not_utf8(command: str, classifier: Path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("un café\n".encode("latin-1")), encoding="utf-8"))
    assert main([command, "--adapter", str(classifier / "run")]) == 2
    assert error_line(capsys, command) == (
        "standard input is not utf-8 text (undecodable byte at position 6); re-encode it as utf-8"
    )


@pytest.mark.parametrize("command", ["predict", "eval"])
@pytest.mark.parametrize("size", ["0", "-4"])
def test_a_batch_size_below_one(command: str, size: str, classifier: Path, capsys):
    data = ["--data", str(classifier / "data.csv")] if command == "eval" else ["w3 w4"]
    assert main([command, "--adapter", str(classifier / "run"), *data, "--batch-size", size]) == 2
    assert error_line(capsys, command) == f"--batch-size must be at least 1, got {size}"


def eval_argv(classifier: Path, output: Path) -> list[str]:
    data = str(classifier / "data.csv")
    return ["eval", "--adapter", str(classifier / "run"), "--data", data, "--output", str(output)]


@pytest.mark.parametrize("case", ["a-folder", "read-only"])
def test_eval_output_that_cannot_be_written(case: str, classifier: Path, tmp_path: Path, capsys, monkeypatch):
    output = tmp_path if case == "a-folder" else tmp_path / "metrics.json"
    if case == "read-only":  # simulated: tests may run as root, whom permissions do not stop
        monkeypatch.setattr(os, "access", lambda path, how: False)
        monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    assert main(eval_argv(classifier, output)) == 2
    expected = {
        "a-folder": f"--output {output} is a folder; pass a file path",
        "read-only": f"cannot write {output}: the file system is read-only; write to a writable disk",
    }[case]
    assert error_line(capsys, "eval") == expected


def test_eval_output_on_a_full_disk_keeps_the_previous_file(classifier: Path, tmp_path: Path, capsys, monkeypatch):
    output = tmp_path / "metrics.json"
    assert main(eval_argv(classifier, output)) == 0
    before = output.read_text()
    assert json.loads(before)["examples"] == 10
    capsys.readouterr()
    real_replace = os.replace

    def full_disk(source, target):  # the rename is the last step: everything before it succeeded
        if Path(target) == output:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))
        real_replace(source, target)

    monkeypatch.setattr(folders.os, "replace", full_disk)
    assert main(eval_argv(classifier, output)) == 2
    assert error_line(capsys, "eval") == (
        f"cannot write {output}: no space left on the device; free some space or write to another disk"
    )
    assert output.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
