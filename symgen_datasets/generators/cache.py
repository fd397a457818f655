"""Every LLM response stored on disk, so that a killed run resumes without repeating a request.

The store is a SQLite database in WAL mode (``responses.sqlite`` in the run's work folder). The
key of a response is the SHA-256 of the backend, the model and its revision (not the server URLs:
see :attr:`Generator.identity`), the prompt, the sampling parameters and the request's seed (which
itself derives from ``--seed`` and the candidate's index). Several processes of one run (see
``accelerate launch``) may share the file: writers wait for each other. A request's completions are written in one transaction when it finishes, so a run killed
at any moment (``kill -9``) leaves either all of a request's completions or none.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from ..errors import BudgetExhausted
from .base import Completion, Generator, SamplingParams


class ResponseCache:
    """A key -> :class:`Completion` store in SQLite (WAL mode, safe to kill at any time).

    Args:
        path: the database file (created with its folder if needed).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use (a run that fails before its first request
        leaves no work folder behind)."""
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=120)
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT NOT NULL, mean_logprob REAL, "
                "prompt_tokens INTEGER NOT NULL DEFAULT 0, completion_tokens INTEGER NOT NULL DEFAULT 0)"
            )
            columns = {row[1] for row in connection.execute("PRAGMA table_info(responses)")}
            for column in ("prompt_tokens", "completion_tokens"):  # a cache written before the token bill
                if column not in columns:
                    connection.execute(f"ALTER TABLE responses ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
            self._connection = connection
        return self._connection

    @staticmethod
    def key(identity: str, prompt: str, params: SamplingParams, seed: int) -> str:
        """The cache key of one sampled completion (``identity``: :attr:`Generator.identity`)."""
        payload = json.dumps(
            [identity, prompt, params.temperature, params.max_new_tokens, list(params.stop), seed],
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        """The stored completions among ``keys``."""
        found: dict[str, Completion] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, text, mean_logprob, prompt_tokens, completion_tokens FROM responses WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                found.update({key: Completion(text, logprob, prompt, completion)
                              for key, text, logprob, prompt, completion in rows})
        return found

    def put_many(self, items: dict[str, Completion]) -> None:
        """Store completions in one transaction (all or none)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO responses (key, text, mean_logprob, prompt_tokens, completion_tokens) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(key, c.text, c.mean_logprob, c.prompt_tokens, c.completion_tokens) for key, c in items.items()],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


class CachedGenerator(Generator):
    """Wraps a generator: answers from the :class:`ResponseCache` when it can, asks the backend
    otherwise and stores what it gets.

    Args:
        inner: the backend.
        cache: the response store.
        max_requests: completions (cache misses) that may be requested in this process; a
            request that would pass it raises :class:`BudgetExhausted`, which stops the run
            (what was stored stays stored).
        max_tokens_billed: tokens (prompt and completion) the requests of this process may be
            billed; once reached, the next request raises :class:`BudgetExhausted` (a request's
            tokens are known when it returns, so the last one may go past it).

    Attributes:
        sent: completions requested from the backend.
        hits: completions served from the cache.
        prompt_tokens, completion_tokens: tokens billed for the completions requested.
        cached_tokens: tokens (prompt and completion) of the completions served from the cache.
    """

    def __init__(self, inner: Generator, cache: ResponseCache, max_requests: int | None = None,
                 max_tokens_billed: int | None = None):
        self.inner = inner
        self.cache = cache
        self.max_requests = max_requests
        self.max_tokens_billed = max_tokens_billed
        self.sent = 0
        self.hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_tokens = 0

    # the backend's identity and limits
    spec = property(lambda self: self.inner.spec)  # type: ignore[assignment]
    model = property(lambda self: self.inner.model)  # type: ignore[assignment]
    backend = property(lambda self: self.inner.backend)  # type: ignore[assignment]
    model_revision = property(lambda self: self.inner.model_revision)  # type: ignore[assignment]
    concurrency = property(lambda self: self.inner.concurrency)  # type: ignore[assignment]
    retries = property(lambda self: self.inner.retries)  # type: ignore[assignment]
    n_supported = property(lambda self: self.inner.n_supported)  # type: ignore[assignment]
    requests_sent = property(lambda self: self.inner.requests_sent)  # type: ignore[assignment]

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def max_prompt_tokens(self, max_new_tokens: int) -> int | None:
        return self.inner.max_prompt_tokens(max_new_tokens)

    async def connect(self) -> None:
        await self.inner.connect()

    async def check(self) -> None:
        await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def sample(self, prompt: str, params: SamplingParams, seeds: Sequence[int]) -> list[Completion]:
        identity = self.inner.identity
        keys = [ResponseCache.key(identity, prompt, params, seed) for seed in seeds]
        found = self.cache.get_many(keys)
        missing = [(key, seed) for key, seed in zip(keys, seeds) if key not in found]
        self.hits += len(keys) - len(missing)
        self.cached_tokens += sum(c.prompt_tokens + c.completion_tokens for c in found.values())  # the hits
        if missing:
            if self.max_requests is not None and self.sent + len(missing) > self.max_requests:
                raise BudgetExhausted(
                    f"stopped at --max-requests {self.max_requests} ({self.sent} completions requested); every "
                    f"finished response is stored in {self.cache.path}: run the same command again to resume"
                )
            if self.max_tokens_billed is not None and self.prompt_tokens + self.completion_tokens >= self.max_tokens_billed:
                raise BudgetExhausted(
                    f"stopped at --max-tokens-billed {self.max_tokens_billed} ({self.prompt_tokens + self.completion_tokens} "
                    f"tokens billed); every finished response is stored in {self.cache.path}: run the same command "
                    "again to resume"
                )
            self.sent += len(missing)
            completions = await self.inner.sample(prompt, params, [seed for _, seed in missing])
            fresh = {key: completion for (key, _), completion in zip(missing, completions)}
            self.prompt_tokens += sum(c.prompt_tokens for c in completions)
            self.completion_tokens += sum(c.completion_tokens for c in completions)
            self.cache.put_many(fresh)
            found.update(fresh)
        return [found[key] for key in keys]
