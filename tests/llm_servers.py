"""Loopback LLM servers speaking the real protocols, for tests and benchmarks (test infrastructure).

* TGI native API: ``POST /`` and ``POST /generate`` with ``{"inputs", "parameters"}``, answering
  ``[{"generated_text", "details": {"tokens": [{"logprob", ...}], ...}}]``; ``GET /info``.
* OpenAI-compatible: ``POST /v1/chat/completions`` (with ``logprobs``) and ``GET /v1/models``.

What the "model" answers is a :class:`Responder`: a function of (prompt, parameters, seed). The
servers also inject faults on request (status codes with ``Retry-After``) to test retries.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

#: (prompt, sampling parameters, seed) -> (text, per-token log-probabilities)
Responder = Callable[[str, dict, int], tuple[str, list[float]]]

_QUESTION = re.compile(r"^-- Question: (.*)$", re.M)


def last_question(prompt: str) -> str | None:
    """The question an answer-generation prompt asks (its last ``-- Question:`` line), or
    ``None`` for a question-generation prompt (which ends with an open ``-- Question:``)."""
    if prompt.rstrip().endswith("-- Question:"):
        return None
    found = _QUESTION.findall(prompt)
    return found[-1].strip() if found else None


def _logprobs(text: str, value: float) -> list[float]:
    return [value] * max(1, len(text.split()))


@dataclass
class OracleResponder:
    """An LLM that is right with probability ``accuracy``.

    For an answer prompt it returns the gold query of the question (``gold``: question -> SQL)
    with probability ``accuracy``. A wrong answer is, with probability ``repeat``, one of the
    question's ``mistakes`` plausible mistakes (fixed per question: a real model repeats its
    mistakes, so they can out-vote the gold query); otherwise half the time another question's
    gold query and half the time broken SQL. Correct answers get a higher log-probability on
    average than wrong ones, with overlap. Draws depend only on (question, seed), so a seeded
    request always gets the same answer.

    For a question-generation prompt it returns one of ``questions`` chosen by the seed.
    """

    gold: dict[str, str]
    accuracy: float = 0.5
    repeat: float = 0.4
    mistakes: int = 2
    questions: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._pool = sorted(set(self.gold.values()))

    def __call__(self, prompt: str, parameters: dict, seed: int) -> tuple[str, list[float]]:
        question = last_question(prompt)
        rng = random.Random(f"{question}|{seed}")
        if question is None:
            text = rng.choice(self.questions) if self.questions else "how many states are there in the usa"
            return " " + text + "\n", _logprobs(text, -0.5)
        gold = self.gold.get(question)
        if gold is None:
            return "SELECT 1;\n\n", [-3.0]
        if rng.random() < self.accuracy:
            return gold + "\n\n", _logprobs(gold, rng.uniform(-0.6, -0.05))
        wrong = rng.random()
        if wrong < self.repeat:
            plausible = random.Random(f"mistakes|{question}").sample([q for q in self._pool if q != gold], self.mistakes)
            text = rng.choice(plausible)
        elif wrong < self.repeat + (1 - self.repeat) / 2:
            text = rng.choice(self._pool)
        else:
            text = gold.replace("SELECT", "SELEC", 1).replace("select", "selec", 1)
        return text + "\n\n", _logprobs(text, rng.uniform(-1.2, -0.2))


@dataclass
class Faults:
    """Fault injection on the n-th request (1-based, counted per server) when ``every`` divides n.

    The fault is ``status`` (an HTTP status, with ``Retry-After: retry_after`` seconds if set),
    or, with ``cycle``, the faults in turn: an HTTP status as a number, or ``"drop"`` to close
    the connection without answering (the client sees the connection die mid-request).
    """

    every: int = 0
    status: int = 503
    retry_after: float | None = None
    cycle: tuple = ()

    def pick(self, number: int):
        """The fault for request ``number``, or ``None``."""
        if not self.every or number % self.every:
            return None
        if self.cycle:
            return self.cycle[(number // self.every) % len(self.cycle)]
        return self.status


class _Handler(BaseHTTPRequestHandler):
    server: "LLMServer._Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict | list, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        owner = self.server.owner
        if self.path.rstrip("/") == "/info":
            self._send(200, {"model_id": owner.model_id, "model_sha": "0123456789abcdef", "max_input_tokens": 8000, "max_total_tokens": 8192})
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": owner.model_id, "object": "model", "owned_by": "test"}]})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self._body()
        number = owner._next_request()
        faults = owner.faults
        fault = faults.pick(number)
        if fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault is not None:
            headers = {"Retry-After": str(faults.retry_after)} if faults.retry_after is not None else {}
            self._send(int(fault), {"error": "injected fault", "error_type": "overloaded"}, headers)
            return
        path = self.path.rstrip("/")
        if path not in ("", "/generate", "/v1/chat/completions"):
            self._send(404, {"error": f"no route {self.path}"})
            return
        if owner.capacity is not None:
            owner.capacity.acquire()
        try:
            (self._openai if path == "/v1/chat/completions" else self._tgi)(body)
        finally:
            if owner.capacity is not None:
                owner.capacity.release()

    def _tgi(self, body: dict) -> None:
        owner = self.server.owner
        parameters = body.get("parameters") or {}
        seed = parameters.get("seed") or 0
        owner.seen.append({"prompt": body["inputs"], "parameters": parameters})
        time.sleep(owner.latency_s)  # recorded on arrival, answered after the latency
        text, logprobs = owner.responder(body["inputs"], parameters, seed)
        text = _cut(text, parameters.get("stop") or [])
        tokens = [{"id": i, "text": "t", "logprob": lp, "special": False} for i, lp in enumerate(logprobs)]
        details = {"finish_reason": "stop_sequence", "generated_tokens": len(tokens), "seed": seed, "prefill": [], "tokens": tokens}
        self._send(200, [{"generated_text": text, "details": details if parameters.get("details") else None}])

    def _openai(self, body: dict) -> None:
        owner = self.server.owner
        prompt = body["messages"][-1]["content"]
        seed = body.get("seed") or 0
        owner.seen.append({"prompt": prompt, "parameters": body})
        time.sleep(owner.latency_s)
        text, logprobs = owner.responder(prompt, body, seed)
        text = _cut(text, body.get("stop") or [])
        content = [{"token": "t", "logprob": lp, "bytes": None, "top_logprobs": []} for lp in logprobs]
        self._send(200, {
            "id": f"chatcmpl-{owner.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or owner.model_id, "system_fingerprint": "test",
            "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "logprobs": {"content": content} if body.get("logprobs") else None,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(logprobs), "total_tokens": 0},
        })


def _cut(text: str, stops: list[str]) -> str:
    """Cut ``text`` after the first stop sequence (TGI and OpenAI servers stop there)."""
    ends = [text.find(s) + len(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text


class LLMServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving both protocols.

    Use as a context manager; :attr:`url` is its root URL; :attr:`seen` lists the requests.
    """

    class _Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the listen backlog: many clients connect at once
        owner: "LLMServer"

    def __init__(
        self,
        responder: Responder,
        faults: Faults | None = None,
        latency_s: float = 0.0,
        model_id: str = "test-llm",
        capacity: int | None = None,
    ):
        self.responder = responder
        #: at most this many requests are served at once (the others wait), like a real server's batch size
        self.capacity = threading.BoundedSemaphore(capacity) if capacity else None
        self.faults = faults or Faults()
        self.latency_s = latency_s
        self.model_id = model_id
        self.requests = 0
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self._server = self._Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_request(self) -> int:
        with self._lock:
            self.requests += 1
            return self.requests

    def __enter__(self) -> "LLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
