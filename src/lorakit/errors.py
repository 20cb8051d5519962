"""The one exception type lorakit raises for bad user input, and how its messages name options.

Every message is a single line that names the problem and the fix; the CLI prints it without a
traceback and exits with status 2. A fix that names an option names it as the user sets it: the
keyword (`text_column='body'`) from Python, the flag (`--text-column body`) at the command line,
where the CLI turns `command_line_wording` on for the duration of a command. A line break inside
a value the message quotes (a column name or a config key from a user's file) is escaped, so the
message stays one line whatever it quotes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from pathlib import Path

_FLAGS = contextvars.ContextVar("lorakit_flag_wording", default=False)

# Every character `str.splitlines` breaks at → its escape.
_LINE_BREAKS = str.maketrans({char: repr(char)[1:-1] for char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


class LorakitError(ValueError):
    """Bad input from the user (a config value, a file, an adapter that does not fit a model)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(str(message).translate(_LINE_BREAKS))


class PeerLostError(LorakitError):
    """Another process of a distributed job died mid-collective. The CLI prints the line and ends the
    process at once (`os._exit`): the collective library's threads still wait on the dead peer, and a
    normal interpreter shutdown destroys them running, which aborts the process (SIGABRT)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training run whose folder exists: `run_dir` holds its config (and its
    checkpoints, if one was saved), so `lorakit train --resume run_dir` continues it."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@contextlib.contextmanager
def command_line_wording() -> Iterator[None]:
    """While inside, `option_name` and `option_setting` name flags (`--text-column`), not keywords."""
    token = _FLAGS.set(True)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def option_name(name: str) -> str:
    """How a message names the option `name` (a keyword such as `text_column`): the keyword, or
    its flag `--text-column` at the command line."""
    return "--" + name.replace("_", "-") if _FLAGS.get() else name


def option_setting(name: str, value: object) -> str:
    """How a message tells the user to set option `name` to `value`: `on_empty='skip'` or
    `--on-empty skip`; True is `overwrite=True` or the bare flag `--overwrite`. A value written in
    angle brackets is a placeholder, shown as it is: `text_column=<a column>`, `--text-column <a column>`."""
    placeholder = isinstance(value, str) and value.startswith("<") and value.endswith(">")
    if not _FLAGS.get():
        return f"{name}={value if placeholder else repr(value)}"
    if value is True:
        return option_name(name)
    return f"{option_name(name)} {value}"
