"""Outputs are written whole or not at all (lorakit.folders): a refused write (disk full, a read-only
file system, permission denied) is one line naming the path and the fix, leaves no temporary behind
and the previous version intact; what lands in place has the umask's permissions."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

import lorakit
from lorakit.errors import LorakitError
from lorakit.folders import (
    check_output_folder,
    check_writable_file,
    check_writable_folder,
    staged_files,
    staged_folder,
    write_failure,
    write_text,
)
from lorakit.lora import io as lora_io
from tiny_models import tiny_bert

DISK_FULL = "no space left on the device; free some space or write to another disk"


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def leftovers(folder: Path) -> list[str]:
    """Temporaries and staging folders left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".partial", ".old")))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The process runs under `mask` inside the block."""
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def test_write_text_replaces_a_file_whole(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_text(target, "old\n")
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and leftovers(tmp_path) == []


def test_a_disk_full_write_keeps_the_previous_file_and_leaves_nothing(tmp_path: Path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_text(target, "previous\n")
    monkeypatch.setattr(Path, "write_text", no_space)
    with pytest.raises(LorakitError) as error:
        write_text(target, "new\n")
    assert str(error.value) == f"cannot write {target}: {DISK_FULL}"
    monkeypatch.undo()
    assert target.read_text() == "previous\n" and leftovers(tmp_path) == []


def test_staged_files_replace_all_or_none(tmp_path: Path):
    first, second = tmp_path / "a.safetensors", tmp_path / "a.json"
    first.write_text("old a")
    second.write_text("old b")
    with pytest.raises(LorakitError, match="no space left"), staged_files(first, second) as (one, two):
        one.write_text("new a")
        no_space()
    assert (first.read_text(), second.read_text()) == ("old a", "old b") and leftovers(tmp_path) == []
    with staged_files(first, second) as (one, two):
        one.write_text("new a")
        two.write_text("new b")
    assert (first.read_text(), second.read_text()) == ("new a", "new b") and leftovers(tmp_path) == []


def test_a_disk_full_folder_keeps_the_previous_folder(tmp_path: Path):
    out = tmp_path / "model"
    with staged_folder(out) as staging:
        (staging / "weights").write_text("v1")
    with pytest.raises(LorakitError) as error, staged_folder(out) as staging:
        (staging / "weights").write_text("v2, half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert str(error.value) == f"cannot write {out}: {DISK_FULL}"
    assert (out / "weights").read_text() == "v1" and leftovers(tmp_path) == []


def test_a_refused_write_inside_a_staged_folder_names_the_folder(tmp_path: Path):
    """Not the temporary being written inside the staging folder: the user's destination."""
    out = tmp_path / "adapter"
    with (
        pytest.raises(LorakitError) as error,
        staged_folder(out) as staging,
        staged_files(staging / "adapter_model.safetensors") as (weights,),
    ):
        weights.write_bytes(b"half")
        no_space()
    assert str(error.value) == f"cannot write {out}: {DISK_FULL}"
    assert not out.exists() and leftovers(tmp_path) == []


def test_an_error_that_is_no_refused_write_keeps_its_type(tmp_path: Path):
    with pytest.raises(KeyError), staged_folder(tmp_path / "out"):
        raise KeyError("a bug")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    assert write_failure(OSError(errno.ENOENT, "No such file or directory"), tmp_path) is None
    assert write_failure(SafetensorError("header too large"), tmp_path) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "x"), DISK_FULL),
        (OSError(errno.EDQUOT, "x"), "the disk quota is used up; free some space or write to another disk"),
        (OSError(errno.EROFS, "x"), "the file system is read-only; write to a writable disk"),
        (PermissionError(errno.EACCES, "x"), "permission denied; write to a folder you may write to"),
        (SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), DISK_FULL),
        (SafetensorError("Error while serializing: I/O error: Read-only file system (os error 30)"), "read-only"),
    ],
    ids=["ENOSPC", "EDQUOT", "EROFS", "EACCES", "safetensors-debug-form", "safetensors-display-form"],
)
def test_refused_writes_are_named(tmp_path: Path, error: BaseException, reason: str):
    assert reason in str(write_failure(error, tmp_path / "out"))


def test_files_get_the_umask_permissions_even_where_safetensors_writes_0600(tmp_path: Path):
    out = tmp_path / "folder"
    with umask(0o027), staged_folder(out) as staging:
        save_file({"w": torch.zeros(2)}, staging / "model.safetensors")
        (staging / "config.json").write_text("{}")
    assert {p.name: mode(p) for p in out.iterdir()} == {"model.safetensors": 0o640, "config.json": 0o640}
    with umask(0o027), staged_files(tmp_path / "best.safetensors") as (best,):
        save_file({"w": torch.zeros(2)}, best)
    assert mode(tmp_path / "best.safetensors") == 0o640


def test_an_adapter_is_saved_with_the_umask_permissions(tmp_path: Path):
    model = tiny_bert()
    lorakit.add_adapter(model, lorakit.LoraConfig(r=2, target_modules=["query"], task_type="SEQ_CLS"))
    with umask(0o022):
        folder = lorakit.save_adapter(model, tmp_path / "adapter")
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        "adapter_model.safetensors": 0o644,
        "adapter_config.json": 0o644,
    }


def test_a_disk_full_adapter_save_keeps_the_previous_adapter(tmp_path: Path, monkeypatch):
    model = tiny_bert()
    lorakit.add_adapter(model, lorakit.LoraConfig(r=2, target_modules=["query"], task_type="SEQ_CLS"))
    folder = lorakit.save_adapter(model, tmp_path / "adapter")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(Path, "write_text", no_space)  # the config, after the weights are written
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(1.0)
    with pytest.raises(LorakitError) as error:
        lorakit.save_adapter(model, folder)
    assert str(error.value) == f"cannot write {folder / lora_io.WEIGHTS_NAME}: {DISK_FULL}"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_unwritable_outputs_are_refused_before_any_work(tmp_path: Path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    with pytest.raises(LorakitError, match=f"^output folder {a_file} is a file; pass a folder path$"):
        check_writable_folder(a_file)
    with pytest.raises(LorakitError, match=f"^output folder {a_file}/run cannot be created: {a_file} is a file;"):
        check_writable_folder(a_file / "run")
    with pytest.raises(LorakitError, match=f"^--output {tmp_path} is a folder; pass a file path$"):
        check_writable_file(tmp_path, "--output")
    monkeypatch.setattr(os, "access", lambda path, how: False)
    with pytest.raises(LorakitError, match=f"^cannot write {tmp_path}/new/x.json: permission denied; write to a"):
        check_writable_file(tmp_path / "new" / "x.json")
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    with pytest.raises(LorakitError, match=f"^cannot write {tmp_path}/out: the file system is read-only; write to"):
        check_output_folder(tmp_path / "out", overwrite=False, inputs=[])
