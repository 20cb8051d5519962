"""The one exception type lorakit raises for bad user input.

Every message is a single line that names the problem and the fix; the CLI prints it without a
traceback and exits with status 2.
"""


class LorakitError(ValueError):
    """Bad input from the user (a config value, a file, an adapter that does not fit a model)."""


class PeerLostError(LorakitError):
    """Another process of a distributed job died mid-collective. The CLI prints the line and ends the
    process at once (`os._exit`): the collective library's threads still wait on the dead peer, and a
    normal interpreter shutdown destroys them running, which aborts the process (SIGABRT)."""
