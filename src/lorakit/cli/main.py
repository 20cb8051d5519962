"""`lorakit` entry point: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lorakit.cli import combine, compare, evaluate, generate, inspect, merge, predict, serve, sweep, train
from lorakit.errors import LorakitError, PeerLostError, RunInterrupted, command_line_wording
from lorakit.folders import write_failure

COMMANDS = {
    "train": train,
    "eval": evaluate,
    "predict": predict,
    "generate": generate,
    "inspect": inspect,
    "compare": compare,
    "sweep": sweep,
    "merge": merge,
    "combine": combine,
    "serve": serve,
}
# Commands that hand the flags they do not know to `lorakit train`.
PASSTHROUGH = {"compare", "sweep"}


def build_parser() -> argparse.ArgumentParser:
    """The `lorakit` parser with one sub-command per module in COMMANDS."""
    parser = argparse.ArgumentParser(prog="lorakit", description="LoRA fine-tuning of pretrained transformers.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; user errors print one line to stderr and return status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if extra and args.command not in PASSTHROUGH:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _quiet_libraries()
    try:
        with command_line_wording():
            if args.command in PASSTHROUGH:
                return COMMANDS[args.command].run(args, extra) or 0
            return COMMANDS[args.command].run(args) or 0
    except (LorakitError, OSError) as error:
        refused = error if isinstance(error, LorakitError) else machine_refusal(error)
        if refused is None:
            raise
        print(f"lorakit {args.command}: error: {refused}", file=sys.stderr)
        if isinstance(error, PeerLostError):
            _exit_at_once(2)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"lorakit {args.command}: {_interrupted(interrupt)}", file=sys.stderr)
        return 130


# Errors of a named file that only a write meets, and those a read can meet as well.
_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
_OPEN_ERRORS = (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


def machine_refusal(error: OSError) -> LorakitError | None:
    """One line for a file the machine refused wherever it happened: a write (disk full, a
    read-only file system: `lorakit.folders.write_failure`) or an open (permission denied, not
    there); None for any other OSError, which keeps its traceback."""
    if error.filename is None:
        return None
    path = Path(os.fsdecode(error.filename))
    if error.errno in _WRITE_ERRORS:
        return write_failure(error, path)
    if error.errno in _OPEN_ERRORS:
        reason = (error.strerror or "refused").lower()
        return LorakitError(f"cannot open {path}: {reason}; check the path and its permissions")
    return None


def _interrupted(interrupt: KeyboardInterrupt) -> str:
    if isinstance(interrupt, RunInterrupted):
        return f"interrupted; continue with lorakit train --resume {interrupt.run_dir}"
    return "interrupted"


def _exit_at_once(code: int) -> None:
    """End the process now, output flushed, skipping the interpreter's shutdown (see PeerLostError)."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _quiet_libraries() -> None:
    """transformers' load reports and progress bars are noise on a CLI; our own output says what matters."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
