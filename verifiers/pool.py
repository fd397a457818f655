"""Worker processes for verifiers: generated programs are checked outside the main process.

A :class:`WorkerPool` runs a verifier's *chunk function* (a module-level function
``f(groups, options) -> list[ExecutionResult]``, where ``groups`` is a list of
``(context, programs)`` pairs) in a :class:`pebble.ProcessPool`:

* many programs per pool task (SymGen's released code sends one task per candidate; packing them
  is most of this project's verification speed-up), the first tasks small so that small
  workloads still spread over the workers;
* jobs read lazily and results given back in job order while the workers run ahead, with a
  bounded number of tasks in flight, so memory holds a window of jobs whatever their number;
* each worker's memory growth capped; a task whose worker dies or overruns its backstop timeout
  is re-run one program per task, so only the culprit is marked ``crash``; a pool broken for
  good is replaced.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, Iterable, Iterator, Sequence

import pebble

from .base import ExecutionResult, Verifier

#: Memory a worker process may add to what it inherited (bytes): a program that needs more fails
#: or kills only its worker.
WORKER_MEMORY_BYTES = 2 * 1024**3

#: A pool task's work: ``(context, programs)`` groups, run in order.
Chunk = list[tuple[Any, list[str]]]
ChunkFunction = Callable[[Chunk, Any], list[ExecutionResult]]


def _address_space() -> int:
    """This process's virtual memory size in bytes (``/proc/self/statm``), 0 if unknown."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _init_worker(memory_bytes: int, setup: Callable[..., None] | None, setup_args: tuple) -> None:
    """Worker start: let the address space grow by at most ``memory_bytes`` beyond what the fork
    inherited (shared, copy-on-write pages of the parent, e.g. a loaded LLM, are not new memory),
    then run the verifier's own ``setup``."""
    import resource

    limit = _address_space() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if setup is not None:
        setup(*setup_args)


class WorkerPool:
    """Runs a chunk function over batches of programs in a pool of worker processes.

    Args:
        chunk_function: module-level ``f(groups, options)`` returning one
            :class:`ExecutionResult` per program of ``groups``, in order; it must never raise
            for a bad program.
        options: passed to every call of ``chunk_function`` (picklable; keep it small).
        max_workers: worker processes (default: the number of CPU cores).
        timeout_s: the time limit of one program (seconds); a task's backstop timeout is
            ``programs x timeout_s x 1.5 + 10`` s.
        memory_bytes: memory each worker may add to its forked address space.
        setup, setup_args: run once in each worker when it starts (e.g. a heap limit).

    Attributes:
        chunk_programs: programs per pool task at most (tasks start at 1 and double up to it).
        tasks_per_worker: pool tasks kept scheduled per worker while a stream is consumed.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        chunk_function: ChunkFunction,
        options: Any = None,
        max_workers: int | None = None,
        timeout_s: float = 5.0,
        memory_bytes: int = WORKER_MEMORY_BYTES,
        setup: Callable[..., None] | None = None,
        setup_args: tuple = (),
    ):
        self.chunk_function = chunk_function
        self.options = options
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_s = timeout_s
        self.memory_bytes = memory_bytes
        self.setup, self.setup_args = setup, setup_args
        self.chunk_programs = 128
        self.tasks_per_worker = 8
        self._pool = self._new_pool()

    def _new_pool(self) -> pebble.ProcessPool:
        # "fork" (Linux's default): "spawn" and "forkserver" re-import the caller's __main__ in
        # every worker, which breaks scripts without an `if __name__ == "__main__"` guard and
        # code read from stdin. The memory cap is relative to the forked address space.
        return pebble.ProcessPool(
            max_workers=self.max_workers,
            initializer=_init_worker,
            initargs=(self.memory_bytes, self.setup, self.setup_args),
            context=multiprocessing.get_context("fork"),
        )

    def _backstop(self, num_programs: int) -> float:
        return num_programs * self.timeout_s * 1.5 + 10.0

    def _schedule(self, groups: Chunk):
        size = sum(len(programs) for _, programs in groups)
        arguments = dict(args=(groups, self.options), timeout=self._backstop(size))
        try:
            return self._pool.schedule(self.chunk_function, **arguments)
        except RuntimeError:
            # pebble's pool is broken for good when a worker dies outside a task (e.g. killed
            # while idle by the OOM killer): replace the pool and go on.
            self._pool.stop()
            self._pool = self._new_pool()
            return self._pool.schedule(self.chunk_function, **arguments)

    def execute_stream(self, jobs: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[list[ExecutionResult]]:
        """Execute batches of programs as a stream: jobs are read lazily and results come back
        in job order, while the workers run ahead (the caller can prepare the next jobs, or vote
        on the last results, as the programs execute).

        Programs of consecutive jobs are packed into pool tasks of up to
        :attr:`chunk_programs` programs (contexts may mix), and at most
        :attr:`tasks_per_worker` tasks per worker are scheduled at a time.

        Args:
            jobs: ``(context, programs)`` pairs.

        Yields:
            One list of :class:`ExecutionResult` per job, aligned with its programs.
        """
        waiting: deque[list] = deque()  # per job, oldest first: [results, programs still running]
        in_flight: deque[tuple] = deque()  # per task, oldest first: (future, groups, places)
        limit = self.tasks_per_worker * self.max_workers
        size, groups, places = 1, [], []

        def finish_oldest_task() -> None:
            future, task_groups, task_places = in_flight.popleft()
            try:
                outcomes = future.result()
            except Exception:  # noqa: BLE001 - a dead, hung or failing worker: find the culprit
                outcomes = self._isolate(task_groups)
            for (entry, position), outcome in zip(task_places, outcomes):
                entry[0][position] = outcome
                entry[1] -= 1

        def finished_jobs() -> Iterator[list[ExecutionResult]]:
            while waiting and waiting[0][1] == 0:
                yield waiting.popleft()[0]

        def submit_task() -> None:
            nonlocal size, groups, places
            in_flight.append((self._schedule(groups), groups, places))
            size, groups, places = min(2 * size, self.chunk_programs), [], []

        for context, programs in jobs:
            programs = list(programs)
            entry = [[None] * len(programs), len(programs)]
            waiting.append(entry)
            for position, program in enumerate(programs):
                if not groups or (groups[-1][0] is not context and groups[-1][0] != context):
                    groups.append((context, []))
                groups[-1][1].append(program)
                places.append((entry, position))
                if len(places) >= size:
                    submit_task()
            while len(in_flight) >= limit:
                finish_oldest_task()
            yield from finished_jobs()
        if places:
            submit_task()
        while in_flight:
            finish_oldest_task()
            yield from finished_jobs()

    def execute_many(self, jobs: Iterable[tuple[Any, Sequence[str]]]) -> list[list[ExecutionResult]]:
        """:meth:`execute_stream` gathered in a list."""
        return list(self.execute_stream(jobs))

    def execute(self, context: Any, programs: Sequence[str]) -> list[ExecutionResult]:
        """Execute one batch of programs in one context; see :meth:`execute_stream`."""
        return self.execute_many([(context, programs)])[0]

    def _isolate(self, groups: Chunk) -> list[ExecutionResult]:
        """Re-run a failed task one program per task so that only the culprit fails."""
        futures = [self._schedule([(context, [program])]) for context, programs in groups for program in programs]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result()[0])
            except FutureTimeout:
                outcomes.append(ExecutionResult("crash", error="worker hung past the time limit and was killed"))
            except pebble.ProcessExpired as error:
                outcomes.append(ExecutionResult("crash", error=f"worker died ({error})"))
            except Exception as error:  # noqa: BLE001
                outcomes.append(ExecutionResult("crash", error=f"{type(error).__name__}: {error}"))
        return outcomes

    def close(self) -> None:
        """Stop the worker processes."""
        self._pool.stop()
        self._pool.join()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()



class CandidateTimeout(BaseException):
    """Raised in a worker when one candidate runs past its time limit (a ``BaseException``, so
    that a chunk function's ``except Exception`` does not swallow it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CandidateTimeout` in this (worker) process's main thread after ``seconds``
    of wall-clock time (``SIGALRM``, ``setitimer``). Python code is interrupted between bytecodes;
    a long call inside native code is stopped only when it returns (the pool's backstop covers
    that)."""
    def alarm(signum, frame):
        raise CandidateTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _each_candidate_limited(groups: Chunk, packed: tuple) -> list[ExecutionResult]:
    """A pool task that runs ``chunk_function`` one candidate at a time, each under
    :func:`time_limit`: a candidate past the limit is ``timeout``, and the others run on."""
    chunk_function, timeout_s, options = packed
    outcomes = []
    for context, programs in groups:
        for program in programs:
            try:
                with time_limit(timeout_s):
                    outcomes.append(chunk_function([(context, [program])], options)[0])
            except CandidateTimeout:
                outcomes.append(ExecutionResult("timeout", error=f"over the {timeout_s:g} s time limit"))
    return outcomes


class PooledVerifier(Verifier):
    """A verifier whose checks run in a :class:`WorkerPool`, started on first use: subclasses
    give the module-level :attr:`chunk_function` and the options it receives
    (:meth:`worker_options`), set :attr:`timeout_s`, and may prepare each worker once
    (:meth:`worker_setup`: load a knowledge base, open a database, start an engine).

    Each candidate runs under a time limit of :attr:`timeout_s` seconds (``timeout`` outcome),
    unless :attr:`limit_each_candidate` is off because the chunk function enforces its own
    (SQLite's progress handler, the Python sandbox)."""

    #: the module-level function a pool task runs: ``f(groups, options) -> outcomes``.
    chunk_function: ChunkFunction
    timeout_s: float = 5.0
    #: run every candidate under :func:`time_limit` (``timeout_s``) in the worker.
    limit_each_candidate: bool = True
    _pool: WorkerPool | None = None

    def worker_options(self) -> Any:
        """What every call of :attr:`chunk_function` receives (picklable, small)."""
        return None

    def worker_setup(self) -> tuple[Callable[..., None], tuple] | None:
        """``(function, args)`` run once in each worker process when it starts (module-level
        function, picklable args), e.g. to load what every candidate is checked against into a
        module global; ``None`` by default."""
        return None

    def execute_stream(self, jobs: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[list[ExecutionResult]]:
        if self._pool is None:
            function, options = type(self).chunk_function, self.worker_options()
            if self.limit_each_candidate:
                function, options = _each_candidate_limited, (type(self).chunk_function, self.timeout_s, options)
            setup, setup_args = self.worker_setup() or (None, ())
            self._pool = WorkerPool(function, options, timeout_s=self.timeout_s, setup=setup, setup_args=setup_args)
        return self._pool.execute_stream(jobs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
