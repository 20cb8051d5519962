"""A training run that cannot go on says so in one line (exit status 2) and loses nothing: an output
folder that cannot be written is refused before any work, a full disk leaves no half-written file
and keeps what was written before, Ctrl-C names the command that continues the run. Labels that are
"nan" are missing, not a class, and the rows skipped are printed; every file gets the umask's
permissions."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from tiny_runs import tiny_flags

from lorakit.cli.main import main
from lorakit.train import loop, outputs

DISK_FULL = "no space left on the device; free some space or write to another disk"


def train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", *tiny_flags(model, data), "--output-dir", str(out), "--max-steps", "2", *extra]


def last_error(capsys: pytest.CaptureFixture[str]) -> str:
    """stderr's last line, after the run's notes: asserted to be its only "lorakit train:" line, and no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("lorakit train:")] == lines[-1:], lines
    return lines[-1]


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial")))


@pytest.mark.parametrize("case", ["a-file", "under-a-file", "read-only"])
def test_an_output_dir_that_cannot_be_written_is_refused_first(
    case, tiny_classifier_dir, sentiment_csv, tmp_path, capsys, monkeypatch
):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    out = {"a-file": a_file, "under-a-file": a_file / "run", "read-only": tmp_path / "run"}[case]
    if case == "read-only":  # simulated: tests may run as root, whom permissions do not stop
        monkeypatch.setattr(os, "access", lambda path, how: False)
        monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    monkeypatch.setattr(loop, "load_config", _not_loaded)
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out)) == 2
    expected = {
        "a-file": f"--output-dir {out} is a file; pass a folder path",
        "under-a-file": f"--output-dir {out} cannot be created: {a_file} is a file; choose another path",
        "read-only": f"cannot write {out}: the file system is read-only; write to a writable disk",
    }[case]
    assert last_error(capsys) == f"lorakit train: error: {expected}"
    assert a_file.read_text() == "keep"


def _not_loaded(*args, **kwargs):
    raise AssertionError("the model was read before the output folder was checked")


def test_disk_full_while_saving_the_adapter(tiny_classifier_dir, sentiment_csv, tmp_path, capsys, monkeypatch):
    """The first adapter save fails: one line naming the folder, and no half-written adapter."""
    out = tmp_path / "run"

    def full_disk(model, folder, *args, **kwargs):
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lorakit.artifacts.save_adapter", full_disk)
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out)) == 2
    assert last_error(capsys) == f"lorakit train: error: cannot write {out / 'adapter'}: {DISK_FULL}"
    assert not (out / "adapter").exists() and leftovers(out) == []


def test_disk_full_while_writing_metrics_keeps_the_adapter(
    tiny_classifier_dir, sentiment_csv, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    real_write = outputs.write_text

    def full_disk(path: Path, text: str) -> None:
        if path.name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, text)

    monkeypatch.setattr(outputs, "write_text", full_disk)
    assert main(train_args(tiny_classifier_dir, sentiment_csv, out)) == 2
    assert last_error(capsys) == f"lorakit train: error: cannot write {out / 'metrics.json'}: {DISK_FULL}"
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and not (out / "metrics.json").exists()
    assert leftovers(out) == []


def test_ctrl_c_names_the_command_that_continues_the_run(
    tiny_classifier_dir, sentiment_csv, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    real_step = loop.optimizer_step
    steps = []

    def interrupted_at_step_2(run, losses):
        steps.append(1)
        if len(steps) == 2:
            raise KeyboardInterrupt
        return real_step(run, losses)

    monkeypatch.setattr(loop, "optimizer_step", interrupted_at_step_2)
    args = train_args(tiny_classifier_dir, sentiment_csv, out, "--max-steps", "3", "--checkpoint-steps", "1")
    assert main(args) == 130
    assert last_error(capsys) == f"lorakit train: interrupted; continue with lorakit train --resume {out}"
    monkeypatch.undo()
    assert main(["train", "--resume", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3


def test_nan_labels_are_skipped_counted_and_printed(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    """ "nan" (what pandas writes for a missing number) is a missing label, never a third class."""
    data = tmp_path / "reviews.csv"
    data.write_text(sentiment_csv.read_text() + "good fun,nan\nbad plot,NaN\ndull film,\n")
    out = tmp_path / "run"
    old_umask = os.umask(0o022)
    try:
        assert main(train_args(tiny_classifier_dir, data, out)) == 0
    finally:
        os.umask(old_umask)
    assert "data: skipped 3 rows without a label (train 3)" in capsys.readouterr().err.splitlines()
    assert json.loads((out / "adapter" / "lorakit.json").read_text())["label_names"] == ["neg", "pos"]
    assert "skipped 3 rows without a label (train 3)" in json.loads((out / "metrics.json").read_text())["data_notes"]
    written = [p for p in out.rglob("*") if p.is_file() and "checkpoints/step-" not in str(p)]
    assert {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in written} == {
        str(p.relative_to(out)): 0o644 for p in written
    }
    assert {"adapter/adapter_model.safetensors", "checkpoints/best.safetensors", "metrics.json"} <= {
        str(p.relative_to(out)) for p in written
    }


def test_a_missing_column_names_the_flag(tiny_classifier_dir, sentiment_csv, tmp_path, capsys):
    assert main(train_args(tiny_classifier_dir, sentiment_csv, tmp_path / "run", "--text-column", "body")) == 2
    assert last_error(capsys) == (
        "lorakit train: error: reviews.csv has no column 'body'; columns present: ['review', 'sentiment']; "
        "pass --text-column <one of them>"
    )


def test_a_config_file_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_bytes("r: 4  # café\n".encode("latin-1"))
    assert main(["train", "--config", str(config)]) == 2
    assert last_error(capsys) == (
        f"lorakit train: error: config file {config} is not UTF-8 text (byte 0xe9 at position 11); re-save it as UTF-8"
    )
