"""TGI and OpenAI-compatible backends against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import socket
import time

import pytest

from symgen_datasets.errors import GenerationError, InputError
from symgen_datasets.generators import EventLoopThread, RetryPolicy, SamplingParams, from_spec, sample_many
from tests.llm_servers import Faults, LLMServer

FAST_RETRY = RetryPolicy(max_attempts=4, initial_wait_s=0.01, max_wait_s=0.05)


def echo(prompt, parameters, seed):
    """Answers with the seed, so tests can see which seed reached the server."""
    return f"SELECT {seed};\n\n-- Question: more", [-0.5, -0.1, -0.3]


@pytest.fixture()
def loop():
    runner = EventLoopThread()
    yield runner
    runner.close()


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_samples_carry_seeds_stops_and_logprobs(kind, loop):
    params = SamplingParams(temperature=0.8, max_new_tokens=50, stop=("\n\n",))
    with LLMServer(echo) as server:
        generator = from_spec(f"{kind}:{server.url}", concurrency=4, retry=FAST_RETRY)
        loop.run(generator.check())
        completions = loop.run(generator.sample("-- Question: q\n", params, [11, 12, 13]))
        loop.run(generator.aclose())
    assert [c.text for c in completions] == ["SELECT 11;\n\n", "SELECT 12;\n\n", "SELECT 13;\n\n"]
    assert all(c.mean_logprob == pytest.approx(-0.3) for c in completions)
    sampled = server.seen[1:]  # the first request is the health check
    assert sorted(r["parameters"]["seed"] for r in sampled) == [11, 12, 13]
    assert all(r["parameters"]["stop"] == ["\n\n"] for r in sampled)
    assert all(r["parameters"]["temperature"] == 0.8 for r in sampled)
    if kind == "openai":
        assert generator.model == "test-llm"  # found with GET /v1/models
        assert all(r["parameters"]["logprobs"] is True for r in sampled)
    else:
        assert all(r["parameters"]["details"] is True for r in sampled)


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_retries_on_503_and_429_honouring_retry_after(kind, loop):
    params = SamplingParams(0.8, 20, stop=("\n\n",))
    for status in (503, 429):
        with LLMServer(echo, faults=Faults(every=2, status=status, retry_after=0.2)) as server:
            generator = from_spec(f"{kind}:{server.url}" + ("#m" if kind == "openai" else ""), concurrency=1, retry=FAST_RETRY)
            start = time.monotonic()
            results = loop.run(sample_many(generator, [("p", params, [1, 2, 3])]))
            elapsed = time.monotonic() - start
            loop.run(generator.aclose())
        assert [c.text for c in results[0]] == ["SELECT 1;\n\n", "SELECT 2;\n\n", "SELECT 3;\n\n"]
        assert generator.retries == 2  # requests 2 and 4 failed once each
        assert elapsed >= 0.2  # Retry-After (0.2 s) was honoured, beyond the 0.05 s backoff cap


def test_a_request_that_fails_for_good_stops_with_a_clear_message(loop):
    with LLMServer(echo, faults=Faults(every=1, status=503)) as server:
        generator = from_spec(f"tgi:{server.url}", retry=FAST_RETRY)
        with pytest.raises(GenerationError, match=r"after 4 attempts.*HTTP 503"):
            loop.run(generator.sample("p", SamplingParams(0.8, 5), [1]))
        loop.run(generator.aclose())
        assert server.requests == 4


def test_client_errors_are_not_retried(loop):
    with LLMServer(echo, faults=Faults(every=1, status=400)) as server:
        generator = from_spec(f"openai:{server.url}#m", retry=FAST_RETRY)
        with pytest.raises(GenerationError, match="HTTP 400"):
            loop.run(generator.sample("p", SamplingParams(0.8, 5), [1]))
        loop.run(generator.aclose())
        assert server.requests == 1


@pytest.mark.parametrize("spec", ["tgi:http://127.0.0.1:9", "openai:http://127.0.0.1:9#m"])
def test_unreachable_server(spec, loop):
    generator = from_spec(spec, retry=FAST_RETRY)
    with pytest.raises(GenerationError, match="127.0.0.1:9.*server is up"):
        loop.run(generator.check())
    loop.run(generator.aclose())


@pytest.mark.parametrize("spec", ["gpt4", "tgi:localhost:8080", "openai:", "transformers:", "embedded:x",
                                  "tgi:http://a:1#model", "tgi:http://a:1,b:2"])
def test_bad_specs(spec):
    with pytest.raises(InputError, match="--generator"):
        from_spec(spec)


def test_concurrency_is_bounded(loop):
    with LLMServer(echo, latency_s=0.05) as server:
        generator = from_spec(f"tgi:{server.url}", concurrency=4, retry=FAST_RETRY)
        start = time.monotonic()
        loop.run(sample_many(generator, [("p", SamplingParams(0.8, 5), list(range(8)))] * 2))
        elapsed = time.monotonic() - start
        loop.run(generator.aclose())
    # 16 requests of 50 ms, 4 at a time: at least 4 waves
    assert server.requests == 16 and elapsed >= 0.2


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_requests_are_spread_over_several_servers(kind, loop):
    params = SamplingParams(0.8, 20, stop=("\n\n",))
    requests = [(f"-- Question: q{i}\n", params, list(range(i * 8, i * 8 + 8))) for i in range(6)]
    with LLMServer(echo, latency_s=0.02) as one:
        single = from_spec(f"{kind}:{one.url}", concurrency=8, retry=FAST_RETRY)
        loop.run(single.check())
        alone = loop.run(sample_many(single, requests))
        loop.run(single.aclose())
    with LLMServer(echo, latency_s=0.02) as first, LLMServer(echo, latency_s=0.02) as second:
        generator = from_spec(f"{kind}:{first.url},{second.url}", concurrency=8, retry=FAST_RETRY)
        loop.run(generator.check())
        spread = loop.run(sample_many(generator, requests))
        loop.run(generator.aclose())
    assert spread == alone  # the same seeded requests get the same answers wherever they go
    assert sum(generator.served) == 48 + 1 and min(generator.served) >= 20  # both servers did about half
    assert generator.provenance == single.provenance == f"{kind} (test-llm)"
    assert generator.identity == single.identity  # the response cache does not depend on the servers


def test_servers_of_different_models_are_refused(loop):
    with LLMServer(echo) as first, LLMServer(echo, model_id="other-llm") as second:
        generator = from_spec(f"tgi:{first.url},{second.url}", retry=FAST_RETRY)
        with pytest.raises(GenerationError, match="different models.*other-llm"):
            loop.run(generator.check())
        loop.run(generator.aclose())


def test_a_dead_server_among_several_is_avoided_by_retries(loop):
    """A request that fails on a dead server is retried, and goes to the live one."""
    with LLMServer(echo) as live:
        generator = from_spec(f"tgi:{live.url},http://127.0.0.1:9", concurrency=4,
                              retry=RetryPolicy(max_attempts=6, initial_wait_s=0.01, max_wait_s=0.02))
        completions = loop.run(sample_many(generator, [("p", SamplingParams(0.8, 5, ("\n\n",)), list(range(12)))]))[0]
        loop.run(generator.aclose())
    assert [c.text for c in completions] == [f"SELECT {i};\n\n" for i in range(12)]
    assert generator.retries >= 1 and live.requests == 12


# --- credentials, hung servers, what the server reports ------------------------------------------

def host_of(server: LLMServer) -> str:
    return server.url.removeprefix("http://")


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_credentials_in_a_url_are_sent_but_never_shown(kind, loop):
    """user:password goes as HTTP basic authentication and ?api_key=... with every request; the
    spec, the provenance and the cache identity show neither."""
    with LLMServer(echo) as server:
        spec = f"{kind}:http://alice:pw_SECRET@{host_of(server)}/?api_key=KEY_SECRET"
        generator = from_spec(spec, retry=FAST_RETRY)
        loop.run(generator.check())
        completions = loop.run(generator.sample("-- Question: q\n", SamplingParams(0.8, 5, ("\n\n",)), [7]))
        loop.run(generator.aclose())
    assert completions[0].text == "SELECT 7;\n\n"
    sent = server.seen[-1]
    assert sent["authorization"] == "Basic " + base64.b64encode(b"alice:pw_SECRET").decode()
    assert sent["query"] == {"api_key": "KEY_SECRET"}
    shown = f"{kind}:http://***@{host_of(server)}?api_key=***"
    assert generator.spec.startswith(shown)
    for text in (generator.spec, generator.provenance, generator.identity):
        assert "SECRET" not in text


@pytest.mark.parametrize("kind", ["tgi", "openai"])
def test_error_messages_never_show_credentials_or_the_api_key(kind, loop, monkeypatch):
    """A server whose error page echoes the Authorization header and the URL; an unreachable
    server with credentials in its URL; a malformed spec: no message shows a secret."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-KEY_SECRET")
    with LLMServer(echo, faults=Faults(every=1, status=401)) as server:
        generator = from_spec(f"{kind}:{server.url}/?token=TOKEN_SECRET", retry=FAST_RETRY)
        with pytest.raises(GenerationError, match="HTTP 401") as failed:
            loop.run(generator.sample("p", SamplingParams(0.8, 5), [1]))
        loop.run(generator.aclose())
    echoed = server.requests == 1 and "injected fault for" in str(failed.value)
    assert echoed and "SECRET" not in str(failed.value)
    generator = from_spec(f"{kind}:http://alice:pw_SECRET@127.0.0.1:9", retry=FAST_RETRY)
    with pytest.raises(GenerationError, match=r"http://\*\*\*@127.0.0.1:9") as unreachable:
        loop.run(generator.check())
    loop.run(generator.aclose())
    assert "SECRET" not in str(unreachable.value)
    with pytest.raises(InputError) as malformed:
        from_spec(f"{kind}:http://alice:pw_SECRET@127.0.0.1:9,ftp://bob:pw_SECRET@x")
    assert "SECRET" not in str(malformed.value)


def test_a_hung_server_times_out_per_attempt_and_each_retry_is_reported(loop, caplog):
    """A server that accepts connections and never answers: each attempt ends after the request
    timeout, the retry is reported (server and error), and the request fails after the last
    attempt instead of waiting minutes in silence."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)  # the kernel accepts the connections; nobody ever reads or answers
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        generator = from_spec(f"tgi:{url}", retry=RetryPolicy(max_attempts=3, initial_wait_s=0.05, max_wait_s=0.1),
                              request_timeout_s=0.3)
        generator.report_every_s = 0.0
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="symgen_datasets"), \
                pytest.raises(GenerationError, match=r"after 3 attempts \(no answer within 0.3 s \(--request-timeout\)\)"):
            loop.run(generator.check())
        elapsed = time.monotonic() - start
        loop.run(generator.aclose())
    notices = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(notices) == 2, notices
    assert all(url in notice and "no answer within 0.3 s" in notice for notice in notices)
    assert "attempt 2 of 3" in notices[0] and "attempt 3 of 3" in notices[1]
    assert 0.9 <= elapsed < 30  # three attempts of 0.3 s, not the default two minutes each


def test_info_without_model_id_is_named_in_a_warning(loop, caplog):
    with LLMServer(echo, info={"model_sha": "abc"}) as server:
        generator = from_spec(f"tgi:{server.url}", retry=FAST_RETRY)
        with caplog.at_level(logging.WARNING, logger="symgen_datasets"):
            loop.run(generator.check())
        loop.run(generator.aclose())
    assert generator.model == ""
    assert any("reported no model_id" in r.getMessage() and server.url in r.getMessage() for r in caplog.records)


def test_the_context_length_comes_from_the_server(loop):
    with LLMServer(echo, info={"model_id": "m", "max_input_tokens": 1000, "max_total_tokens": 1100}) as server:
        generator = from_spec(f"tgi:{server.url}", retry=FAST_RETRY)
        assert generator.max_prompt_tokens(200) is None  # unknown until connected
        loop.run(generator.connect())
        loop.run(generator.aclose())
    assert generator.max_prompt_tokens(48) == 1000 and generator.max_prompt_tokens(200) == 900


def test_openai_samples_a_prompts_candidates_in_one_request_with_n(loop):
    """A server that takes ``n`` answers a prompt's 8 samples in one request (seeded with the
    first seed), the prompt billed once."""
    with LLMServer(echo, n_support="full") as server:
        generator = from_spec(f"openai:{server.url}#m", retry=FAST_RETRY)
        results = loop.run(sample_many(generator, [("p", SamplingParams(0.8, 20, stop=("\n\n",)), list(range(10, 18)))]))
        loop.run(generator.aclose())
    assert server.requests == 1 and server.seen[0]["parameters"]["n"] == 8 and server.seen[0]["parameters"]["seed"] == 10
    assert [c.text for c in results[0]] == [f"SELECT {10 + i};\n\n" for i in range(8)]  # choice i: the i-th sample
    assert generator.n_supported is True


@pytest.mark.parametrize("support", ["ignore", "reject"])
def test_openai_falls_back_to_one_request_per_seed_where_n_is_not_taken(support, loop, caplog):
    """A server that ignores ``n`` (one choice: the first seed's sample) or refuses it (HTTP 400)
    gets one request per seed, once told, with a warning; the samples are those of one request
    per seed."""
    with caplog.at_level(logging.WARNING, logger="symgen_datasets.generators"):
        with LLMServer(echo, n_support=support) as server:
            generator = from_spec(f"openai:{server.url}#m", concurrency=1, retry=FAST_RETRY)
            first = loop.run(generator.sample("p", SamplingParams(0.8, 20, stop=("\n\n",)), [1, 2, 3]))
            asked = server.requests
            second = loop.run(generator.sample("q", SamplingParams(0.8, 20, stop=("\n\n",)), [4, 5]))
            loop.run(generator.aclose())
    assert [c.text for c in first] == ["SELECT 1;\n\n", "SELECT 2;\n\n", "SELECT 3;\n\n"]
    assert [c.text for c in second] == ["SELECT 4;\n\n", "SELECT 5;\n\n"]
    assert asked == (3 if support == "ignore" else 4)  # the n request counted, then one per remaining seed
    assert server.requests - asked == 2 and all("n" not in r["parameters"] for r in server.seen[-2:])
    assert generator.n_supported is False
    assert "one request per candidate" in caplog.text


@pytest.mark.parametrize("support", ["full", "ignore", "reject"])
def test_openai_check_tells_whether_the_server_takes_n_before_any_generation(support, loop, caplog):
    """The run's 1-token check asks for ``n=2``: every run, a resumed one included, knows how
    the server samples before its first generation request (adaptive voting sizes its rounds
    from it)."""
    with caplog.at_level(logging.WARNING, logger="symgen_datasets.generators"):
        with LLMServer(echo, n_support=support) as server:
            generator = from_spec(f"openai:{server.url}#m", retry=FAST_RETRY)
            loop.run(generator.check())
            loop.run(generator.aclose())
    assert generator.n_supported is (support == "full")
    if support == "reject":  # refused (HTTP 400, not recorded by the server), then a plain 1-token check
        assert server.requests == 2 and len(server.seen) == 1 and "n" not in server.seen[0]["parameters"]
    else:
        assert server.requests == 1 and server.seen[0]["parameters"]["n"] == 2
    assert server.seen[0]["parameters"]["max_tokens"] == 1 and generator.requests_sent == 1
    assert ("one request per candidate" in caplog.text) is (support != "full")


def test_tgi_has_no_n_one_request_per_candidate(loop):
    with LLMServer(echo) as server:
        generator = from_spec(f"tgi:{server.url}", retry=FAST_RETRY)
        loop.run(generator.check())
        loop.run(generator.sample("-- Question: q\n", SamplingParams(0.8, 20), [3, 4, 5]))
        loop.run(generator.aclose())
    assert generator.n_supported is None
    assert sorted(r["parameters"]["seed"] for r in server.seen[1:]) == [3, 4, 5]
