"""Errors that stop a run with a message a user can act on, and the exit status of each.

Every error raised for bad input names the file and line (or the option) at fault and says what
to do; the CLI prints ``str(error)`` without a traceback and exits with the error's
:attr:`~SymgenError.exit_code`.

Exit statuses of ``symgen`` (also in the README):

* 0: done;
* 1: ``symgen verify`` found differences;
* 2: bad input, a failed request, a busy work folder or database (:class:`SymgenError`);
* 3: stopped cleanly at ``--max-requests``; the same command resumes (:class:`BudgetExhausted`);
* 130: interrupted (Ctrl-C); the same command resumes.
"""

#: ``symgen verify`` found differences between the published and the recomputed rows.
EXIT_DIFFERENCES = 1
#: Bad input, a failed request, or a resource held by another run.
EXIT_ERROR = 2
#: Stopped cleanly at the request budget; every finished response is stored.
EXIT_BUDGET = 3
#: Interrupted by the user (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130


class SymgenError(Exception):
    """Base class for errors whose message is meant for the user (printed without a traceback).

    Attributes:
        exit_code: the CLI's exit status for this error (2 unless a subclass says otherwise).
    """

    exit_code = EXIT_ERROR


class InputError(SymgenError):
    """Bad user input: a malformed file, an unknown name, a missing database, a bad option."""


class GenerationError(SymgenError):
    """An LLM backend failed for good (after retries) or cannot be reached."""


class NothingKept(GenerationError):
    """No question reached ``--min-votes``: nothing was written.

    Attributes:
        counts: the run's stage counts.
    """

    def __init__(self, message: str, counts: dict[str, int] | None = None):
        super().__init__(message)
        self.counts = dict(counts or {})


class BusyError(SymgenError):
    """A work folder or a database is in use by another process (another run, a writer)."""


class BudgetExhausted(SymgenError):
    """``--max-requests`` was reached; the run stopped cleanly and the same command resumes."""

    exit_code = EXIT_BUDGET
