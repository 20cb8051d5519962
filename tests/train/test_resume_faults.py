"""Fault injection on real `lorakit train` runs of the tiny classifier: kill -9 at random steps, a
full disk and Ctrl-C while saving, Ctrl-C while evaluating, damaged and missing checkpoints, a
second run into a folder in use. Each faulty run stops with one line, and its --resume ends
exactly where the uninterrupted run ends: same adapter, history, metrics and train_seconds."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_checkpoint import fill_the_disk, truncate
from test_train_tiny import train_args

from lorakit.cli.main import main
from lorakit.train import checkpoint, loop
from lorakit.train.progress import StepTimer
from lorakit.train.run_lock import RunLock

# 16 steps of 8 rows; a checkpoint every 4 steps, validation at steps 8 and 16.
SHORT = ("--max-steps", "16", "--checkpoint-steps", "4", "--eval-steps", "8", "--lora-dropout", "0.1")
SAME = ("accuracy", "loss", "macro_f1", "confusion_matrix", "steps", "best_epoch")


def fake_clock() -> staticmethod:
    """A clock that reads 0, 1, 2, ...: every optimizer step lasts exactly one second."""
    return staticmethod(itertools.count().__next__)


@pytest.fixture(autouse=True)
def one_second_steps(monkeypatch):
    monkeypatch.setattr(StepTimer, "clock", fake_clock())


@pytest.fixture(scope="module")
def straight(tiny_classifier_dir, sentiment_csv, tmp_path_factory) -> Path:
    """The uninterrupted run, in this process (as the faulty runs and their resumes)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(StepTimer, "clock", fake_clock())
        assert main(train_args(tiny_classifier_dir, sentiment_csv, out, *SHORT)) == 0
    return out


def assert_same_run(expected: Path, actual: Path, timed: bool = True) -> None:
    """Same adapter bit for bit, same history, same test metrics (and train time, tokens/s)."""
    a = load_file(expected / "adapter" / "adapter_model.safetensors")
    b = load_file(actual / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the adapters differ"
    assert json.loads((expected / "history.json").read_text()) == json.loads((actual / "history.json").read_text())
    m_a, m_b = (json.loads((run / "metrics.json").read_text()) for run in (expected, actual))
    for key in (*SAME, *(("train_seconds", "tokens_per_second") if timed else ())):
        assert m_a[key] == m_b[key], key


def resume(run: Path, capsys) -> str:
    """`lorakit train --resume run` in this process; its stderr."""
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    return capsys.readouterr().err


def last_line(err: str) -> str:
    lines = err.strip().splitlines()
    return lines[-1] if lines else ""


def checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(("step-", ".tmp")))


def test_train_seconds_counts_training_steps_only(straight):
    metrics = json.loads((straight / "metrics.json").read_text())
    # One fake second per step: validation, checkpoints and start-up add nothing.
    assert metrics["train_seconds"] == 16.0 and metrics["steps"] == 16
    tokens = json.loads((straight / "checkpoints" / "step-16" / "progress.json").read_text())["tokens"]
    assert metrics["tokens_per_second"] == round(tokens / 16, 1)


def test_a_full_disk_while_checkpointing_stops_in_one_line_and_resumes(
    tiny_classifier_dir, sentiment_csv, straight, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    fill_the_disk(monkeypatch, lambda path: path.parent.name == ".tmp-step-8")
    assert main(train_args(tiny_classifier_dir, sentiment_csv, run, *SHORT)) == 2
    error = last_line(capsys.readouterr().err)  # after the run's own log lines
    assert error == (
        f"lorakit train: error: could not finish checkpoint {run / 'checkpoints' / 'step-8'} (No space left on "
        f"device); the earlier checkpoints are untouched: make room, then continue with lorakit train --resume {run}"
    )
    assert checkpoint_names(run) == ["step-4"] and not (run / "metrics.json").exists()
    monkeypatch.setattr(checkpoint, "open", open, raising=False)  # room made
    err = resume(run, capsys)
    assert f"resume: continuing from {run / 'checkpoints' / 'step-4'}, step 4 of 16" in err
    assert_same_run(straight, run)


def interrupt_when(monkeypatch, module, name: str, due) -> None:
    """Send this process SIGINT (Ctrl-C), once, as `module.name` is called with arguments that
    make `due(*args)` true; the call then goes on until Python raises KeyboardInterrupt in it."""
    real = getattr(module, name)
    sent = []

    def interrupted(*args, **kwargs):
        if not sent and due(*args):
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupted)


@pytest.mark.parametrize(
    ("module", "name", "due"),
    [
        # Ctrl-C while step 8's checkpoint writes state.pt (its trainable weights are on disk).
        (checkpoint, "_write", lambda path, fill: path.name == "state.pt" and ".tmp-step-8" in str(path)),
        # Ctrl-C while validating at step 8 (before its checkpoint).
        (loop, "evaluate", lambda run, split, progress: split == "validation" and run.scheduler.last_epoch == 8),
        # Ctrl-C in step 6's update.
        (loop, "optimizer_step", lambda run, losses: run.scheduler.last_epoch == 5),
    ],
    ids=["saving", "evaluating", "training"],
)
def test_ctrl_c_stops_cleanly_and_resumes(
    tiny_classifier_dir, sentiment_csv, straight, tmp_path, monkeypatch, capsys, module, name, due
):
    run = tmp_path / "run"
    interrupt_when(monkeypatch, module, name, due)
    assert main(train_args(tiny_classifier_dir, sentiment_csv, run, *SHORT)) == 130
    err = capsys.readouterr().err
    assert last_line(err) == f"lorakit train: interrupted; continue with lorakit train --resume {run}"
    assert "Traceback" not in err
    assert checkpoint_names(run) == ["step-4"]  # nothing half-written, no temporary folder
    resume(run, capsys)
    assert_same_run(straight, run)


def copy_run(straight: Path, to: Path) -> Path:
    """The finished run's folder without its results, as a run interrupted after its last step."""
    shutil.copytree(straight, to)
    for name in ("metrics.json", "history.json", "report.html"):
        (to / name).unlink()
    return to


def test_a_damaged_last_checkpoint_falls_back_to_the_one_before(straight, tmp_path, capsys):
    run = copy_run(straight, tmp_path / "run")
    checkpoints = run / "checkpoints"
    assert checkpoint_names(run) == ["step-12", "step-16"]
    size = (checkpoints / "step-16" / "trainable.safetensors").stat().st_size
    truncate(checkpoints / "step-16" / "trainable.safetensors")
    err = resume(run, capsys)
    assert [line for line in err.splitlines() if line.startswith("resume:")] == [
        f"resume: skipped {checkpoints / 'step-16'}: trainable.safetensors has 100 bytes where {size:,} were "
        "written (truncated or overwritten)",
        f"resume: continuing from {checkpoints / 'step-12'}, step 12 of 16",
    ]
    assert_same_run(straight, run)
    assert checkpoint_names(run) == ["step-12", "step-16"]  # step-16 written anew, whole
    assert checkpoint.damage(checkpoints / "step-16") is None


def test_no_intact_checkpoint_is_one_line(straight, tmp_path, capsys):
    run = copy_run(straight, tmp_path / "run")
    for name in ("step-12", "step-16"):
        truncate(run / "checkpoints" / name / "state.pt")
    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err[-3:-1]] == ["resume", "resume"]
    assert err[-1:] == [
        f"lorakit train: error: no intact checkpoint in {run / 'checkpoints'} (each is damaged: see above); "
        f"delete that folder to train {run} again from step 0"
    ]


def test_resume_without_a_checkpoint_says_so_and_starts_from_step_0(straight, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(straight / "config.yaml", run / "config.yaml")  # killed before its first checkpoint
    err = resume(run, capsys)
    assert f"\nresume: no checkpoint in {run}; starting from step 0\n" in err
    assert_same_run(straight, run)


def test_a_run_folder_in_use_is_refused_naming_its_process(
    tiny_classifier_dir, sentiment_csv, straight, tmp_path, capsys
):
    run = copy_run(straight, tmp_path / "run")
    busy = f"lorakit train: error: {run} is in use by another lorakit train (PID {os.getpid()})"
    with RunLock() as lock:
        lock.acquire(run)
        for args in (["train", "--resume", str(run)], train_args(tiny_classifier_dir, sentiment_csv, run, *SHORT)):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert err.startswith(busy) and err.count("\n") == 1  # refused before anything is loaded
    assert checkpoint_names(run) == ["step-12", "step-16"]


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lorakit.cli.main", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_checkpoint(process: subprocess.Popen, pointer: Path, step: int) -> int:
    """Wait until `process` has checkpointed step `step` or a later one; the step it points at."""
    deadline = time.time() + 300
    while time.time() < deadline:
        saved = int(pointer.read_text().removeprefix("step-")) if pointer.exists() else 0
        if saved >= step:
            return saved
        assert process.poll() is None, f"the run ended before step {step}: {process.stderr.read()[-2000:]}"
        time.sleep(0.002)
    raise AssertionError(f"no checkpoint of step {step} within 300 s")


def test_kill_9_at_random_steps_then_resume_matches_an_uninterrupted_run(tiny_classifier_dir, sentiment_csv, tmp_path):
    """Two kill -9s of `lorakit train` processes at random steps, up to 30 ms after a checkpoint
    (inside the next step, or the next save: one checkpoint per step), each run resumed by the
    next process (which takes over the dead one's lock); the last one's run is the uninterrupted
    run's, bit for bit."""
    rng = random.Random(14)
    common = ("--epochs", "1", "--checkpoint-steps", "1", "--eval-steps", "10", "--lora-dropout", "0.1")
    straight = run_cli(train_args(tiny_classifier_dir, sentiment_csv, tmp_path / "straight", *common))

    interrupted = tmp_path / "interrupted"
    command = train_args(tiny_classifier_dir, sentiment_csv, interrupted, *common)
    saved = 0
    for step in sorted(rng.sample(range(2, 30), 2)):
        victim = run_cli(command)
        saved = wait_for_checkpoint(victim, interrupted / "checkpoints" / "latest", max(step, saved + 1))
        time.sleep(rng.uniform(0, 0.03))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        assert not (interrupted / "metrics.json").exists()
        command = ["train", "--resume", str(interrupted), "--quiet"]
    resumed = run_cli(command)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    err = resumed.stderr.read()
    assert "resume: continuing from" in err and "skipped" not in err  # kill -9 damages no checkpoint
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    assert_same_run(tmp_path / "straight", interrupted, timed=False)
