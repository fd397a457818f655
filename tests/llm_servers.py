"""Loopback LLM servers speaking the real protocols, for tests and benchmarks (test infrastructure).

* TGI native API: ``POST /generate`` with ``{"inputs", "parameters"}``, answering
  ``{"generated_text", "details": {"tokens": [{"logprob", ...}], ...}}`` (``POST /``: a list of
  one); ``GET /info``.
* OpenAI-compatible: ``POST /v1/chat/completions`` (with ``logprobs``) and ``GET /v1/models``.

What the "model" answers is a :class:`Responder`: a function of (prompt, parameters, seed). The
servers also inject faults on request (status codes with ``Retry-After``, dropped connections)
to test retries; a fault's body echoes the request's ``Authorization`` header and URL, as a
careless server's error page might (credentials must never reach messages).
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

#: (prompt, sampling parameters, seed) -> (text, per-token log-probabilities)
Responder = Callable[[str, dict, int], tuple[str, list[float]]]

_QUESTION = re.compile(r"^(?:-- )?(?:Question|Natural Language): ?(.*)$", re.M)


def last_question(prompt: str) -> str | None:
    """The question an answer-generation prompt asks: its last ``Question:`` line (SQL's
    ``-- Question:``, Break's ``Question:``, NL2Bash's and MTOP's ``Natural Language:``), or
    ``None`` for a question-generation prompt, which ends with an open label."""
    last = _QUESTION.fullmatch(prompt.rstrip().splitlines()[-1])
    if last and not last.group(1).strip():
        return None
    found = [q for q in _QUESTION.findall(prompt) if q.strip()]
    return found[-1].strip() if found else None


def break_sql(answer: str, rng: random.Random) -> str:
    """SQL that does not parse (the default corruption of :class:`OracleResponder`)."""
    return answer.replace("SELECT", "SELEC", 1).replace("select", "selec", 1)


#: How a simulated LLM writes an invalid answer in each language (besides its plausible mistakes).
CORRUPTIONS: dict[str, Callable[[str, random.Random], str]] = {
    "sql": break_sql,
    "nl2bash": lambda answer, rng: "frobnicate " + answer.split(" ", 1)[-1],
    "mtop": lambda answer, rng: answer.replace("[IN:", "[SL:", 1),
    "break": lambda answer, rng: answer + " ;return #99",
    "geoquery": lambda answer, rng: answer.replace("(", "((", 2),  # an extra opening: the repair cannot fix it
}


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
    #: turns a gold answer into an invalid one (default: broken SQL)
    corrupt: Callable[[str, random.Random], str] = break_sql

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
            text = self.corrupt(gold, rng)
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


def tgi_output(text: str, logprobs: list[float], seed: int, details: bool) -> dict:
    """A TGI ``/generate`` answer for ``text`` with per-token ``logprobs``."""
    tokens = [{"id": i, "text": "t", "logprob": lp, "special": False} for i, lp in enumerate(logprobs)]
    detail = {"finish_reason": "stop_sequence", "generated_tokens": len(tokens), "seed": seed, "prefill": [], "tokens": tokens}
    return {"generated_text": text, "details": detail if details else None}


def chat_completion(number: int, model: str, prompt: str, text: str, logprobs: list[float], with_logprobs: bool) -> dict:
    """An OpenAI ``chat.completion`` answer for ``text`` with per-token ``logprobs``."""
    content = [{"token": "t", "logprob": lp, "bytes": None, "top_logprobs": []} for lp in logprobs]
    return {
        "id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": "test",
        "choices": [{
            "index": 0, "message": {"role": "assistant", "content": text},
            "logprobs": {"content": content} if with_logprobs else None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(logprobs), "total_tokens": 0},
    }


def _cut(text: str, stops: list[str]) -> str:
    """Cut ``text`` after the first stop sequence (TGI and OpenAI servers stop there)."""
    ends = [text.find(s) + len(s) for s in stops if s and s in text]
    return text[: min(ends)] if ends else text


class LLMServer:
    """An asyncio HTTP server (aiohttp) on 127.0.0.1 (a free port), in a thread of its own,
    serving both protocols. Each request takes ``latency_s``; with ``capacity``, at most that many
    are served at once (the others wait), like a real server's batch size, so the server's
    capacity is ``capacity / latency_s`` requests per second.

    Use as a context manager; :attr:`url` is its root URL; :attr:`seen` lists the requests
    (unless ``record=False``, for long benchmarks); :attr:`requests` counts the POSTs (faulty
    ones included).
    """

    def __init__(
        self,
        responder: Responder,
        faults: Faults | None = None,
        latency_s: float = 0.0,
        model_id: str = "test-llm",
        capacity: int | None = None,
        record: bool = True,
        info: dict | None = None,
        n_support: str = "ignore",
    ):
        self.responder = responder
        #: what chat completions do with ``n`` > 1: ``full`` (n choices, the i-th answered with seed + i, usage
        #: billing the prompt once), ``ignore`` (one choice, as servers without n do) or ``reject`` (HTTP 400)
        self.n_support = n_support
        self.info = info
        self.record = record
        self.faults = faults or Faults()
        self.latency_s = latency_s
        self.model_id = model_id
        self.capacity = capacity
        self.requests = 0
        self.seen: list[dict] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llm-server", daemon=True)
        self._runner: web.AppRunner | None = None
        self._slots: asyncio.Semaphore | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/info", self._info)
        app.router.add_get("/v1/models", self._models)
        for path in ("/", "/generate", "/v1/chat/completions"):
            app.router.add_post(path, self._post)
        return app

    async def _info(self, request: web.Request) -> web.Response:
        default = {"model_id": self.model_id, "model_sha": "0123456789abcdef", "max_input_tokens": 8000, "max_total_tokens": 8192}
        return web.json_response(default if self.info is None else self.info)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.model_id, "object": "model", "owned_by": "test"}]})

    async def _post(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests += 1
        fault = self.faults.pick(self.requests)
        if fault == "drop":  # the connection dies mid-request, with no answer
            request.transport.abort()
            return web.Response()
        if fault is not None:
            headers = {"Retry-After": str(self.faults.retry_after)} if self.faults.retry_after is not None else {}
            echo = f"injected fault for {request.url} with Authorization {request.headers.get('Authorization')}"
            return web.json_response({"error": echo, "error_type": "overloaded"}, status=int(fault), headers=headers)
        n = int(body.get("n") or 1) if request.path == "/v1/chat/completions" else 1
        if n > 1 and self.n_support == "reject":
            return web.json_response({"error": {"message": "n > 1 is not supported", "type": "invalid_request_error"}},
                                     status=400)
        if self.n_support != "full":
            n = 1
        if self._slots is not None:
            await self._slots.acquire()
        try:
            if request.path == "/v1/chat/completions":
                prompt, parameters, seed = body["messages"][-1]["content"], body, body.get("seed") or 0
            else:
                parameters = body.get("parameters") or {}
                prompt, seed = body["inputs"], parameters.get("seed") or 0
            if self.record:
                self.seen.append({"prompt": prompt, "parameters": parameters, "query": dict(request.query),
                                  "authorization": request.headers.get("Authorization")})
            await asyncio.sleep(self.latency_s)  # the slot is busy for latency_s
            answers = []
            for i in range(n):
                text, logprobs = self.responder(prompt, parameters, seed + i)
                answers.append((_cut(text, parameters.get("stop") or []), logprobs))
            text, logprobs = answers[0]
        finally:
            if self._slots is not None:
                self._slots.release()
        if request.path == "/v1/chat/completions":
            output = chat_completion(self.requests, body.get("model") or self.model_id, prompt, text, logprobs,
                                     bool(body.get("logprobs")))
            if n > 1:
                first = output["choices"][0]
                output["choices"] = [dict(first, index=i, message={"role": "assistant", "content": t},
                                          logprobs=first["logprobs"] and {"content": [
                                              {"token": "t", "logprob": lp, "bytes": None, "top_logprobs": []} for lp in lps]})
                                     for i, (t, lps) in enumerate(answers)]
                output["usage"]["completion_tokens"] = sum(len(lps) for _, lps in answers)
            return web.json_response(output)
        output = tgi_output(text, logprobs, seed, bool(parameters.get("details")))
        return web.json_response([output] if request.path == "/" else output)  # POST / answers a list

    async def _start(self) -> str:
        if self.capacity:
            self._slots = asyncio.Semaphore(self.capacity)
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def __enter__(self) -> "LLMServer":
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


_OPERATORS = [(" + ", " - "), (" - ", " + "), (" < ", " > "), (" > ", " < "), (" <= ", " < "), (" >= ", " > "),
              (" == ", " != "), (" != ", " == "), (" * ", " + "), (" and ", " or "), (" or ", " and ")]


_STATES = ["texas", "ohio", "california", "alaska", "new york", "colorado"]
_SUPERLATIVES = [("largest", "smallest"), ("highest", "lowest"), ("longest", "shortest"), ("most", "fewest")]


def rename_variables(query: str, rng: random.Random | None = None, shift: int = 7) -> str:
    """A GeoQuery query with its variables renamed (by default A -> H, B -> I...): the same answer."""
    return re.sub(r"\b([A-Z])\b", lambda m: chr((ord(m.group(1)) - 65 + shift) % 26 + 65), query)


def swap_constant(query: str, rng: random.Random | None = None) -> str:
    """A GeoQuery query with its first state (else city, else the country) replaced by another."""
    match = re.search(r"stateid\('?([a-z ]+)'?\)", query)
    if match:
        other = next(s for s in _STATES if s != match.group(1))
        return query[:match.start()] + f"stateid('{other}')" + query[match.end():]
    match = re.search(r"cityid\('?([a-z .]+)'?,_\)", query)
    if match:
        return query[:match.start()] + f"cityid({'austin' if match.group(1) != 'austin' else 'boston'},_)" + query[match.end():]
    return query.replace("countryid(usa)", "stateid(texas)", 1)


def flip_superlative(query: str, rng: random.Random | None = None) -> str:
    """A GeoQuery query with its first superlative flipped (largest <-> smallest, ...; count -> sum
    when it has none)."""
    for a, b in _SUPERLATIVES:
        for old, new in ((a, b), (b, a)):
            if re.search(rf"\b{old}\(", query):
                return re.sub(rf"\b{old}\(", f"{new}(", query, count=1)
    return query.replace("count(", "sum(", 1)


def drop_conjunct(query: str, rng: random.Random | None = None) -> str:
    """A GeoQuery query with one conjunct (a loc/2, major/1, state/1, river/1 or city/1 goal) dropped."""
    for pattern in (r",loc\([A-Z],[A-Z]\)", r"loc\([A-Z],[A-Z]\),", r",major\([A-Z]\)", r",state\([A-Z]\)",
                    r"state\([A-Z]\),", r",river\([A-Z]\)", r"city\([A-Z]\),"):
        changed = re.sub(pattern, "", query, count=1)
        if changed != query:
            return changed
    return query


def wrong_operator(body: str, rng: random.Random) -> str | None:
    """``body`` with one binary operator replaced by another (``None`` if it has none)."""
    found = [(a, b) for a, b in _OPERATORS if a in body]
    if not found:
        return None
    a, b = rng.choice(found)
    positions = [m.start() for m in re.finditer(re.escape(a), body)]
    at = rng.choice(positions)
    return body[:at] + b + body[at + len(a):]


@dataclass
class PythonOracle:
    """A code LLM that is right with probability ``accuracy``, for HumanEval-style problems.

    * An answer prompt (it ends with one of ``problems``' ``prompt``): the canonical body, or a
      wrong one: with probability ``repeat`` one of the problem's 2 fixed plausible mistakes (a
      wrong operator), else a fresh wrong operator or a body that raises.
    * A test-input prompt (it ends with ``entry_point(``): the arguments of one of the calls in
      the problem's own test, chosen by the seed (inputs only: outputs are never shown).
    * A question-generation prompt (it ends with ``# Problem N``): one of ``new_problems``.
    """

    problems: list[dict]
    accuracy: float = 0.5
    repeat: float = 0.4
    new_problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_entry = {p["entry_point"]: p for p in self.problems}

    def __call__(self, prompt: str, parameters: dict, seed: int) -> tuple[str, list[float]]:
        rng = random.Random(f"{prompt[-200:]}|{seed}")
        tail = prompt.rstrip()
        if re.search(r"# Problem \d+$", tail):
            text = rng.choice(self.new_problems) if self.new_problems else "def f(x):\n    \"\"\" Return x. \"\"\"\n"
            return text + "\n# Problem", [-0.5]
        call = re.search(r"(\w+)\($", tail)
        if call and call.group(1) in self._by_entry:
            problem = self._by_entry[call.group(1)]
            calls = re.findall(r"candidate\((.*)\)", problem["test"])
            return (rng.choice(calls) + ")\n" if calls else ")\n"), [-0.3]
        defined = re.findall(r"^def (\w+)\(", prompt, re.M)
        problem = self._by_entry.get(defined[-1]) if defined else None
        if problem is None or not tail.endswith(problem["prompt"].rstrip()):
            return "    pass\n", [-3.0]
        gold = problem["canonical_solution"]
        if rng.random() < self.accuracy:
            return gold, _logprobs(gold, rng.uniform(-0.6, -0.05))
        if rng.random() < self.repeat:
            mistake = wrong_operator(gold, random.Random(f"mistake|{problem['entry_point']}|{rng.randrange(2)}"))
        else:
            mistake = wrong_operator(gold, rng) if rng.random() < 0.5 else None
        text = mistake or "    raise NotImplementedError\n"
        return text, _logprobs(text, rng.uniform(-1.2, -0.2))


if __name__ == "__main__":  # python -m tests.llm_servers FILE [ACCURACY]: a TGI/OpenAI server right ACCURACY of the time
    import sys
    import time

    from symgen_datasets.io import read_records

    rows = [record for _, record in read_records(sys.argv[1])]
    gold = {row["question"].strip(): row["query"] for row in rows}
    with LLMServer(OracleResponder(gold, accuracy=float(sys.argv[2]) if len(sys.argv) > 2 else 0.5), record=False) as server:
        print(f"tgi:{server.url}", flush=True)
        while True:
            time.sleep(3600)


@dataclass
class PairResponder:
    """An LLM for label-conditioned sentence-pair prompts (RTE): it answers a prompt that asks
    for a label (``"not_entailment"`` / "does not entail" in it, else entailment) with one real
    pair of that label from ``pool``, chosen by the seed, as ``premise\\nHypothesis: ...``."""

    pool: list[dict]

    def __call__(self, prompt: str, parameters: dict, seed: int) -> tuple[str, list[float]]:
        ask = prompt.rsplit("Premise:", 1)[0][-400:]
        label = 1 if ("not_entailment" in ask or "does not entail" in ask) else 0
        rows = [r for r in self.pool if r["label"] == label]
        row = random.Random(f"{seed}|{label}").choice(rows)
        text = f" {row['premise']}\nHypothesis: {row['hypothesis']}\n"
        return text, _logprobs(text, -0.5)
