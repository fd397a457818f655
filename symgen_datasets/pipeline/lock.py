"""One run at a time per work folder: an exclusive lock held for the whole run.

Two runs on one work folder would both send every request and overwrite each other's
intermediate files. The lock is an ``flock`` on ``<work folder>/run.lock`` (through
:mod:`filelock`): the kernel releases it when its process ends, however it ends, so a run
killed with ``kill -9`` never blocks the next one, and worker processes forked by the run do not
hold it. The holder writes its process id, host, start time and command line (credentials
masked) into the file, so that a refused run can say who holds the folder.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

import filelock

from ..errors import BusyError, InputError
from ..redaction import redact_command

#: The lock file's name inside the work folder.
LOCK_NAME = "run.lock"


class RunLock:
    """An exclusive, non-blocking lock on a run's work folder (a context manager).

    Entering creates the folder if needed and takes the lock, or raises at once; leaving
    releases it. A folder that holds nothing but the lock file when the run ends (a run that
    failed before storing anything) is removed.

    Args:
        folder: the work folder.
        name: the lock file's name inside it.
        what: what the folder is, in the refusal's message.
        advice: what the refusal tells the user to do.

    Raises:
        BusyError: another process holds the folder (the message names the process).
        InputError: the folder cannot be created or written.
    """

    def __init__(self, folder: str | Path, name: str = LOCK_NAME, what: str = "work folder",
                 advice: str = "wait for it to finish, or give this run another --output or --work-dir"):
        self.folder = Path(folder)
        self.path = self.folder / name
        self.what, self.advice = what, advice
        self._lock: filelock.FileLock | None = None

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["started"]))
            return f"process {info['pid']} on {info['host']}, started {started}: {info['command']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    @staticmethod
    def _write_holder(fd: int) -> None:
        command = shlex.join(redact_command([Path(sys.argv[0]).name, *sys.argv[1:]])) if sys.argv else "?"
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
        data = json.dumps(info).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def __enter__(self) -> "RunLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(self.path), timeout=0, on_acquired=self._write_holder)
            lock.acquire()
        except filelock.Timeout:
            raise BusyError(
                f"the {self.what} {self.folder} is in use by another run ({self._describe_holder()}); {self.advice}"
            ) from None
        except OSError as error:
            raise InputError(f"work folder {self.folder}: cannot create or lock it ({error.strerror or error})") from None
        self._lock = lock
        return self

    def __exit__(self, *exc_info) -> None:
        if self._lock is None:
            return
        try:
            alone = [entry.name for entry in self.folder.iterdir()] == [self.path.name]
            if alone:
                self.path.unlink(missing_ok=True)  # while held: a waiter that opened it sees it unlinked and retries
        finally:
            self._lock.release()
            self._lock = None
        if alone:
            try:
                self.folder.rmdir()
            except OSError:
                pass  # something appeared meanwhile: keep it
