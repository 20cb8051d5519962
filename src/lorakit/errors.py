"""The one exception type lorakit raises for bad user input.

Every message is a single line that names the problem and the fix; the CLI prints it without a
traceback and exits with status 2.
"""


class LorakitError(ValueError):
    """Bad input from the user (a config value, a file, an adapter that does not fit a model)."""
