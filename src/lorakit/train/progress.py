"""What a person watching a run sees (a progress bar with loss, tokens/s, ETA and memory), and the
clock of the training time that tokens/s is measured over."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator

import torch
from tqdm.auto import tqdm

from lorakit.report.humanize import format_bytes, format_duration


def peak_memory_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated on CUDA; on CPU the process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class StepTimer:
    """Times optimizer steps for `train_seconds`: from the start of a step's first micro-batch to
    the end of its update. Outside it: start-up and loading, evaluation, held-out samples, and
    writing checkpoints and weights. A run resumed from a checkpoint adds to the seconds saved
    there, so an interrupted run reports about what an uninterrupted one does (the steps done
    after the last checkpoint, lost with the process, count once: when they are done again)."""

    clock = staticmethod(time.perf_counter)  # monotonic seconds; tests put a fake clock here

    def __init__(self) -> None:
        self.started: float | None = None  # the clock when the current step began; None between steps

    def start(self) -> None:
        """A micro-batch begins: the step's clock starts, unless it runs already."""
        if self.started is None:
            self.started = self.clock()

    def stop(self) -> float:
        """The step is done: its seconds (the clock stops until the next `start`)."""
        seconds = self.clock() - self.started
        self.started = None
        return seconds


class Progress:
    """A tqdm bar over optimizer steps (ETA from tqdm); `quiet` prints only notes, as log lines;
    `silent` (the other ranks of a DDP run) prints nothing."""

    def __init__(
        self, total_steps: int, done_steps: int, quiet: bool, silent: bool = False, estimate: int | None = None
    ) -> None:
        self.silent = silent
        self.estimate = estimate  # the memory planner's peak, shown next to the measured one
        self.bar = (
            None
            if quiet or silent
            else tqdm(
                total=total_steps,
                initial=done_steps,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                # Redrawn often on a terminal; into a log file, a line every 30 s is plenty.
                mininterval=0.2 if sys.stderr.isatty() else 30,
            )
        )

    def update(self, loss: float, tokens: int, seconds: float) -> None:
        """One optimizer step done: advance the bar, showing loss, tokens/s and peak memory."""
        if self.bar is None:
            return
        memory = format_bytes(peak_memory_bytes(torch.device("cuda" if torch.cuda.is_available() else "cpu")))
        if self.estimate:
            memory += f" (est. {format_bytes(self.estimate)})"
        self.bar.set_postfix_str(
            f"loss {loss:.4f}, {tokens / max(seconds, 1e-9):,.0f} tok/s, peak mem {memory}", refresh=False
        )
        self.bar.update(1)

    def note(self, message: str) -> None:
        """Print a line (above the bar, or as a log line under --quiet)."""
        if self.silent:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def phase(self, what: str) -> Iterator[None]:
        """Note the start of a long phase (validation, generation) and, at its end, its duration:
        a run that evaluates a big model never sits silent."""
        self.note(f"{what}...")
        started = time.perf_counter()
        yield
        self.note(f"{what}: done in {format_duration(time.perf_counter() - started)}")

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
