"""`lorakit` entry point: one sub-command per module of this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lorakit.cli import combine, compare, evaluate, generate, inspect, merge, predict, serve, sweep, train
from lorakit.errors import LorakitError, PeerLostError

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
        if args.command in PASSTHROUGH:
            return COMMANDS[args.command].run(args, extra) or 0
        return COMMANDS[args.command].run(args) or 0
    except LorakitError as error:
        print(f"lorakit {args.command}: error: {error}", file=sys.stderr)
        if isinstance(error, PeerLostError):
            _exit_at_once(2)
        return 2
    except KeyboardInterrupt:
        print(f"lorakit {args.command}: interrupted", file=sys.stderr)
        return 130


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
