"""Errors that stop a run with a message a user can act on.

Every error raised for bad input names the file and line (or the option) at fault and says what
to do; the CLI prints ``str(error)`` without a traceback and exits with status 2.
"""


class SymgenError(Exception):
    """Base class for errors whose message is meant for the user (printed without a traceback)."""


class InputError(SymgenError):
    """Bad user input: a malformed file, an unknown name, a missing database, a bad option."""


class GenerationError(SymgenError):
    """An LLM backend failed for good (after retries) or cannot be reached."""
