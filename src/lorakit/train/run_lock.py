"""One `lorakit train` per run folder: an OS file lock held while the run writes there.

The lock is `fcntl.flock` on `RUN_DIR/.lorakit.lock`, which also holds the holder's PID so that a
refused run can name it. The operating system drops a flock when its process ends in any way
(`kill -9`, a crash, a lost terminal), so a lock left by a dead process is taken over by the
next run without asking. On a platform without `fcntl` (Windows) the folder is not locked and
runs proceed as before. The lock file stays in the folder: deleting it could let a third process
lock a fresh file while a second still waits on the old one.
"""

from __future__ import annotations

import os
from pathlib import Path

from lorakit.errors import LorakitError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".lorakit.lock"


class RunLock:
    """The lock of at most one run folder, held by this process from `acquire` until `release`
    (or until the process ends). A context manager: leaving the `with` block releases it."""

    def __init__(self) -> None:
        self.folder: Path | None = None  # the locked folder, None while none is held
        self._fd: int | None = None

    def acquire(self, folder: Path) -> None:
        """Lock `folder` (which must exist); again for the folder already held is a no-op.

        Raises:
            LorakitError: another process holds the folder's lock (the message names its PID).
        """
        if self.folder is not None:
            if self.folder != folder:
                raise LorakitError(f"this run already holds {self.folder}; it cannot lock {folder} too")
            return
        if fcntl is None:
            return
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f"PID {holder}" if holder.isdigit() else "a process that is starting"
            raise LorakitError(
                f"{folder} is in use by another lorakit train ({who}); wait for it to end or stop it, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.folder, self._fd = folder, fd

    def release(self) -> None:
        """Let go of the lock (no-op when none is held); the PID is cleared first, still locked."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor drops the flock
        self.folder, self._fd = None, None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
