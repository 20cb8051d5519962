"""The one exception type lorakit raises for bad user input.

Every message is a single line that names the problem and the fix; the CLI prints it without a
traceback and exits with status 2. A line break inside a value the message quotes (a column name
or a config key from a user's file) is escaped, so the message stays one line whatever it quotes.
"""

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
