"""Checkpoint files under faults: checksums catch damage, a failed or interrupted save leaves
nothing half-written, old checkpoints go only once a newer one is complete; the run lock."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.train import checkpoint
from lorakit.train.checkpoint import damage, load_checkpoint, newest_intact, save_checkpoint
from lorakit.train.run_lock import LOCK_FILE, RunLock


def tiny_training() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, count: int) -> None:
    for _ in range(count):
        model(torch.randn(2, 4)).square().mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()


def save(folder: Path, step: int, model, optimizer, scheduler) -> Path:
    return save_checkpoint(folder, step, model, optimizer, scheduler, {"step": step})


def saved_steps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "latest")


@pytest.fixture
def two_checkpoints(tmp_path):
    """checkpoints/step-2 and step-4 of a tiny model, and the model, optimizer and scheduler."""
    model, optimizer, scheduler = tiny_training()
    folder = tmp_path / "checkpoints"
    for step in (2, 4):
        train_steps(model, optimizer, scheduler, 2)
        save(folder, step, model, optimizer, scheduler)
    return folder, (model, optimizer, scheduler)


def test_a_checkpoint_lists_every_file_with_its_size_and_sha256(two_checkpoints):
    folder, _ = two_checkpoints
    manifest = json.loads((folder / "step-4" / "manifest.json").read_text())
    assert manifest["step"] == 4 and manifest["version"] == 1
    assert set(manifest["files"]) == {"trainable.safetensors", "state.pt", "progress.json"}
    for name, entry in manifest["files"].items():
        assert entry["bytes"] == (folder / "step-4" / name).stat().st_size
        assert entry["sha256"] == checkpoint._sha256(folder / "step-4" / name)
    assert damage(folder / "step-4") is None
    assert newest_intact(folder).path == folder / "step-4"
    assert (folder / "latest").read_text() == "step-4"


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("harm", "file", "why"),
    [
        (truncate, "trainable.safetensors", "trainable.safetensors has 100 bytes where"),
        (flip_a_byte, "trainable.safetensors", "trainable.safetensors does not match its SHA-256"),
        (truncate, "state.pt", "state.pt has 100 bytes where"),
        (flip_a_byte, "progress.json", "progress.json does not match its SHA-256"),
        (Path.unlink, "state.pt", "state.pt is missing"),
        (lambda path: path.write_text("{not json"), "manifest.json", "its manifest.json is unreadable"),
        (lambda path: path.write_text('{"files": {}}'), "manifest.json", "does not list trainable.safetensors"),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(two_checkpoints, harm, file, why):
    folder, _ = two_checkpoints
    harm(folder / "step-4" / file)
    found = newest_intact(folder)
    assert found.path == folder / "step-2"
    [(name, reason)] = found.skipped
    assert name == "step-4" and why in reason and "\n" not in reason


def test_no_intact_checkpoint_is_found_when_every_one_is_damaged(two_checkpoints):
    folder, _ = two_checkpoints
    for step in ("step-2", "step-4"):
        truncate(folder / step / "trainable.safetensors")
    found = newest_intact(folder)
    assert found.path is None and [name for name, _ in found.skipped] == ["step-4", "step-2"]
    assert newest_intact(folder.parent / "nothing-here") == checkpoint.Found(None, [])


def test_a_checkpoint_from_before_manifests_is_taken_unverified(two_checkpoints):
    folder, (model, optimizer, scheduler) = two_checkpoints
    (folder / "step-4" / "manifest.json").unlink()
    found = newest_intact(folder)
    assert found.path == folder / "step-4" and not found.checksummed
    (folder / "step-4" / "progress.json").unlink()
    assert newest_intact(folder).path == folder / "step-2"
    # Damage that only reading finds is one line too.
    truncate(folder / "step-2" / "trainable.safetensors")
    (folder / "step-2" / "manifest.json").unlink()
    with pytest.raises(LorakitError) as caught:
        load_checkpoint(folder / "step-2", model, optimizer, scheduler)
    assert "step-2 cannot be read (SafetensorError" in str(caught.value) and "\n" not in str(caught.value)


def test_resume_restores_what_was_saved(two_checkpoints):
    folder, (model, _, scheduler) = two_checkpoints
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    other, other_optimizer, other_scheduler = tiny_training()
    assert load_checkpoint(folder / "step-4", other, other_optimizer, other_scheduler) == {"step": 4}
    assert all(torch.equal(weights[k], v) for k, v in other.state_dict().items())
    assert other_scheduler.last_epoch == scheduler.last_epoch == 4


class FullDisk(io.RawIOBase):
    """A file on a disk that fills after `room` bytes: the writes past it fail with `code`."""

    def __init__(self, path: Path, room: int, code: int = errno.ENOSPC) -> None:
        self.file, self.room, self.code = open(path, "wb"), room, code  # noqa: SIM115 (closed with this object)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.room:
            self.file.write(data[: self.room])  # the disk takes what fits: a half-written file
            self.room = 0
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.file.write(data)

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()
        super().close()


def fill_the_disk(monkeypatch, hits, room: int = 10, code: int = errno.ENOSPC) -> None:
    """From now on each file the checkpoint module writes where `hits(path)` hits a full disk
    after `room` bytes (or another OS error `code`)."""

    def opener(path, mode="r", *args, **kwargs):
        if "w" in mode and hits(Path(path)):
            return io.BufferedWriter(FullDisk(Path(path), room, code), buffer_size=16)
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", opener, raising=False)


@pytest.mark.parametrize("failing", ["trainable.safetensors", "state.pt", "progress.json", "manifest.json"])
def test_a_full_disk_during_a_save_is_one_line_and_leaves_the_last_checkpoint(two_checkpoints, monkeypatch, failing):
    folder, (model, optimizer, scheduler) = two_checkpoints
    before = {name: (folder / "step-4" / name).read_bytes() for name in ("trainable.safetensors", "state.pt")}
    fill_the_disk(monkeypatch, lambda path: path.name == failing)
    train_steps(model, optimizer, scheduler, 2)
    with pytest.raises(LorakitError) as caught:
        save(folder, 6, model, optimizer, scheduler)
    message = str(caught.value)
    assert "\n" not in message
    assert f"could not finish checkpoint {folder / 'step-6'} (No space left on device)" in message
    assert f"lorakit train --resume {folder.parent}" in message
    assert saved_steps(folder) == ["step-2", "step-4"]  # no temporary folder, nothing of step-6
    assert (folder / "latest").read_text() == "step-4"
    assert newest_intact(folder).path == folder / "step-4"
    assert before == {name: (folder / "step-4" / name).read_bytes() for name in before}


def test_a_full_disk_while_pointing_latest_keeps_the_complete_checkpoint(two_checkpoints, monkeypatch):
    folder, (model, optimizer, scheduler) = two_checkpoints
    fill_the_disk(monkeypatch, lambda path: path.name == ".latest.tmp", room=0)
    with pytest.raises(LorakitError, match="No space left on device"):
        save(folder, 6, model, optimizer, scheduler)
    assert saved_steps(folder) == ["step-2", "step-4", "step-6"]  # step-6 is whole; old ones kept
    assert (folder / "latest").read_text() == "step-4"
    assert newest_intact(folder).path == folder / "step-6"  # resume reads the folders, not the pointer


@pytest.mark.parametrize("code", [errno.EROFS, errno.EIO, errno.EDQUOT])
def test_any_write_error_during_a_save_is_one_line_naming_it(two_checkpoints, monkeypatch, code):
    folder, (model, optimizer, scheduler) = two_checkpoints
    fill_the_disk(monkeypatch, lambda path: path.name == "state.pt", code=code)
    with pytest.raises(LorakitError) as caught:
        save(folder, 6, model, optimizer, scheduler)
    assert f"could not finish checkpoint {folder / 'step-6'} ({os.strerror(code)}); " in str(caught.value)
    assert saved_steps(folder) == ["step-2", "step-4"]


def test_an_interrupt_during_a_save_removes_the_half_written_checkpoint(two_checkpoints, monkeypatch):
    folder, (model, optimizer, scheduler) = two_checkpoints

    def interrupted(state, file):
        file.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(folder, 6, model, optimizer, scheduler)
    assert saved_steps(folder) == ["step-2", "step-4"]
    assert newest_intact(folder).path == folder / "step-4"


def test_leftovers_of_a_killed_save_are_cleared_by_the_next_one(two_checkpoints):
    folder, (model, optimizer, scheduler) = two_checkpoints
    (folder / ".tmp-step-5").mkdir()
    (folder / ".tmp-step-5" / "trainable.safetensors").write_bytes(b"partial")
    (folder / ".latest.tmp").write_text("step-5")
    save(folder, 6, model, optimizer, scheduler)
    assert saved_steps(folder) == ["step-4", "step-6"]


def test_old_checkpoints_go_once_a_newer_one_is_complete_and_abandoned_ones_after_a_fallback(two_checkpoints):
    folder, (model, optimizer, scheduler) = two_checkpoints
    save(folder, 6, model, optimizer, scheduler)
    assert saved_steps(folder) == ["step-4", "step-6"]  # KEEP = 2
    # A resume skipped damaged step-6 for step-4; the resumed run writes step-5, then step-6 anew.
    truncate(folder / "step-6" / "state.pt")
    save(folder, 5, model, optimizer, scheduler)
    assert saved_steps(folder) == ["step-4", "step-5"]
    save(folder, 6, model, optimizer, scheduler)
    assert saved_steps(folder) == ["step-5", "step-6"]
    assert all(damage(folder / name) is None for name in saved_steps(folder))


def test_a_run_folder_is_locked_against_a_second_run(tmp_path):
    with RunLock() as first:
        first.acquire(tmp_path)
        first.acquire(tmp_path)  # again for the same folder: a no-op
        with pytest.raises(LorakitError) as caught:
            RunLock().acquire(tmp_path)
        message = str(caught.value)
        assert message == (
            f"{tmp_path} is in use by another lorakit train (PID {os.getpid()}); wait for it to end or stop it, "
            "then run again"
        )
    with RunLock() as second:  # released on leaving the block
        second.acquire(tmp_path)
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_the_lock_of_a_process_that_died_is_taken_over(tmp_path):
    holder = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
        "sys.stdin.read()"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path / LOCK_FILE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "locked\n"
    with pytest.raises(LorakitError, match=f"PID {process.pid}\\)"):
        RunLock().acquire(tmp_path)
    process.kill()  # kill -9: the holder never releases; the OS does
    process.wait()
    assert (tmp_path / LOCK_FILE).read_text() == str(process.pid)  # its PID is still in the file
    with RunLock() as lock:
        lock.acquire(tmp_path)
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
