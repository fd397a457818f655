"""Never lose work: kill -9 and resume, a request budget, and a server that fails 20% of the time."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from symgen_datasets.cli import main
from tests.llm_servers import Faults, LLMServer


def rows(folder: Path, config: str = "default") -> list[dict]:
    return datasets.load_dataset(str(folder), config, split="train").to_list()


def answered(server: LLMServer) -> int:
    """Sampling requests the server answered (the 1-token health checks excluded)."""
    return sum(1 for r in server.seen if r["parameters"].get("max_new_tokens", r["parameters"].get("max_tokens")) != 1)


def args(server: LLMServer, out: Path, *extra: str) -> list[str]:
    return ["generate", "geoquery_sql", "--generator", f"tgi:{server.url}", "--num-questions", "12", "--num-samples", "5",
            "--min-votes", "2", "--seed", "11", "--concurrency", "4", "--output", str(out), *extra]


def cached(work: Path) -> int:
    database = work / "responses.sqlite"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT count(*) FROM responses").fetchone()[0]
    except sqlite3.Error:
        return 0


def completions(server: LLMServer) -> int:
    """Completions the server returned to sampling requests (``n`` each where it takes ``n``)."""
    return sum(int(r["parameters"].get("n") or 1) if server.n_support == "full" else 1 for r in server.seen
               if r["parameters"].get("max_new_tokens", r["parameters"].get("max_tokens")) != 1)


@pytest.mark.parametrize("backend,support,sampling", [
    ("tgi", "ignore", "exact"),  # the default: rounds of one request per candidate
    ("tgi", "ignore", "adaptive"),
    ("openai", "full", "exact"),  # n > 1: a question's candidates from one request
])
def test_kill_9_then_the_same_command_resumes_to_the_same_dataset(tmp_path, oracle, backend, support, sampling):
    def command(out: Path) -> list[str]:
        spec = f"tgi:{server.url}" if backend == "tgi" else f"openai:{server.url}#m"
        return [*args(server, out, "--sampling", sampling)[:2], "--generator", spec, *args(server, out, "--sampling", sampling)[4:]]

    with LLMServer(oracle, latency_s=0.1 if backend == "tgi" else 0.4, n_support=support) as server:
        clean = tmp_path / "clean"
        assert main(command(clean)) == 0
        total = completions(server)

        out, work = tmp_path / "out", tmp_path / ".out.work"
        before = completions(server)
        process = subprocess.Popen([sys.executable, "-m", "symgen_datasets.cli", *command(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while cached(work) < total // 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL and not out.exists()
        stored = cached(work)
        assert 0 < stored < total
        first_run = completions(server) - before

        resumed_from = completions(server)
        assert main(command(out)) == 0
        resumed = completions(server) - resumed_from
    assert resumed == total - stored  # no finished request is asked again
    assert first_run >= stored
    assert rows(out) == rows(clean) and rows(out, "candidates") == rows(clean, "candidates")
    if backend == "openai":
        assert all(r["parameters"].get("n") == 5 for r in server.seen if r["parameters"].get("max_tokens") == 200)


def test_max_requests_stops_cleanly_and_the_same_command_resumes(tmp_path, oracle, capsys):
    with LLMServer(oracle) as server:
        clean = tmp_path / "clean"
        assert main(args(server, clean, "--no-cache")) == 0
        total = answered(server)
        out = tmp_path / "out"
        start = answered(server)
        assert main(args(server, out, "--max-requests", "10")) == 3  # stopped, resumable: its own exit code
        err = capsys.readouterr().err
        assert "stopped at --max-requests 10" in err and "error" not in err and not out.exists()
        assert 0 < answered(server) - start <= 10  # a prompt's samples are admitted together
        assert main(args(server, out)) == 0
        assert answered(server) - start == total
    assert rows(out) == rows(clean)


def test_twenty_percent_of_requests_failing_gives_the_same_dataset(tmp_path, oracle, capsys):
    # the request layer under faults: all K at once (rounds would wait on each question's retries in turn)
    with LLMServer(oracle) as server:
        clean = tmp_path / "clean"
        assert main(args(server, clean, "--no-cache", "--sampling", "all")) == 0
    capsys.readouterr()
    faults = Faults(every=5, cycle=(429, 503, "drop"), retry_after=0.01)
    with LLMServer(oracle, faults=faults) as faulty:
        out = tmp_path / "faulty"
        assert main(args(faulty, out, "--no-cache", "--sampling", "all")) == 0
    summary = capsys.readouterr().out
    retried = int(next(line.split()[-1] for line in summary.splitlines() if line.startswith("retried requests")))
    assert retried >= faulty.requests // 5 - 1 > 0
    without_server = [{k: v for k, v in r.items() if k != "generator"} for r in rows(out)]  # the URLs differ
    assert without_server == [{k: v for k, v in r.items() if k != "generator"} for r in rows(clean)]
    assert rows(out, "candidates") == rows(clean, "candidates")


def test_dry_run_sends_nothing(tmp_path, oracle, capsys):
    with LLMServer(oracle) as server:
        assert main(args(server, tmp_path / "out", "--dry-run")) == 0
        assert server.requests == 0
    printed = capsys.readouterr().out
    assert "question-generation prompts: 4 to 48" in printed and "answer-generation prompts:   12" in printed
    assert int(printed.split("prompt tokens (estimated):")[1].split()[0]) > 12 * 5 * 500
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.work").exists()


def test_a_second_run_on_the_same_folder_stops_at_once_and_a_killed_run_leaves_no_lock(tmp_path, oracle, capsys):
    with LLMServer(oracle, latency_s=0.1) as server:
        clean = tmp_path / "clean"
        assert main(args(server, clean)) == 0
        out, work = tmp_path / "out", tmp_path / ".out.work"
        first = subprocess.Popen([sys.executable, "-m", "symgen_datasets.cli", *args(server, out)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while cached(work) == 0 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended too soon"
        before = server.requests
        capsys.readouterr()
        assert main(args(server, out)) == 2  # refused at once, while the first run goes on
        err = capsys.readouterr().err
        assert f"the work folder {work} is in use by another run (process {first.pid} on " in err
        assert "cli.py generate geoquery_sql" in err and "--work-dir" in err
        assert server.requests - before < 10  # the second run sent nothing (the first one's requests go on)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert (work / "run.lock").exists()  # left by the killed run
        assert main(args(server, out)) == 0  # a stale lock does not block
    assert rows(out) == rows(clean) and rows(out, "candidates") == rows(clean, "candidates")
    assert not (work / "task_knowledge").exists()  # the run's database snapshots are gone with it


def test_no_cache_with_a_request_budget_is_refused(tmp_path, capsys):
    status = main(["generate", "geoquery_sql", "--generator", "tgi:http://127.0.0.1:9", "--no-cache", "--max-requests", "5",
                   "--output", str(tmp_path / "out")])
    assert status == 2 and "--max-requests needs the response cache" in capsys.readouterr().err


def test_n_sampling_resumes_to_the_same_dataset_asking_no_finished_request_again(tmp_path, oracle, capsys):
    """OpenAI-compatible server with ``n``: one request per question's candidates; stopped by
    --max-requests and run again, the dataset is the uninterrupted run's and no finished request
    is asked again; the card says how candidates were sampled."""
    def openai_args(server, out, *extra):
        return ["generate", "geoquery_sql", "--generator", f"openai:{server.url}#m", "--num-questions", "12",
                "--num-samples", "5", "--min-votes", "2", "--output", str(out), *extra]

    with LLMServer(oracle, n_support="full") as server:
        clean = tmp_path / "clean"
        assert main(openai_args(server, clean, "--no-cache")) == 0
        whole = answered(server)
        answer_requests = [r for r in server.seen if r["parameters"].get("max_tokens") == 200]  # the answer prompts
        assert len(answer_requests) == 12 and all(r["parameters"]["n"] == 5 for r in answer_requests)
        out = tmp_path / "out"
        start = answered(server)
        assert main(openai_args(server, out, "--max-requests", "20")) == 3
        first = answered(server) - start
        assert main(openai_args(server, out)) == 0
        assert answered(server) - start == whole  # nothing asked twice
        assert 0 < first < whole
    assert rows(out) == rows(clean)
    card = (out / "README.md").read_text()
    assert "samples per request | a question's candidates from one request (n > 1)" in card
    # the bill: the resumed run paid for the requests it sent; the first run's came from the cache
    assert "| generation requests |" in card and "more served by the response cache" in card


def test_the_bill_counts_a_prompt_once_per_request_with_n(tmp_path, oracle):
    """Against a server that bills each request's prompt once and every returned choice, the
    run's bill (card and summary) is what the server billed."""
    from symgen_datasets.pipeline.run import generate
    from symgen_datasets.pipeline.settings import GenerateSettings

    billed = {"prompt": 0, "completion": 0}
    results = {}
    for support in ("full", "ignore"):
        with LLMServer(oracle, n_support=support) as server:
            result = generate(GenerateSettings(task="geoquery_sql", generator=f"openai:{server.url}#m", num_questions=6,
                                               num_samples=5, min_votes=2, work_dir=str(tmp_path / support),
                                               output=str(tmp_path / f"out-{support}"), price_per_mtok="1.5,6"))
            if support == "full":
                bill = result.metadata["bill"]
                assert bill["cost"] == pytest.approx((bill["prompt_tokens"] * 1.5 + bill["completion_tokens"] * 6) / 1e6)
                card = (tmp_path / "out-full" / "README.md").read_text()
                assert f"| generation requests | {bill['requests']:,} |" in card and "| cost |" in card
        results[support] = (result.bill, server.requests)  # every request, the 1-token check included
    full, ignore = results["full"][0], results["ignore"][0]
    assert full["requests"] == results["full"][1] and ignore["requests"] == results["ignore"][1]
    assert full["requests"] < ignore["requests"]
    assert full["prompt_tokens"] < ignore["prompt_tokens"]  # the answer prompts billed once, not 5 times
    assert full["completion_tokens"] > 0 and full["cached_tokens"] == 0


@pytest.mark.parametrize("prices", ["1", "a,b", "1,-2", "1,2,3"])
def test_a_bad_price_is_refused_before_anything_is_sent(prices):
    from symgen_datasets.errors import InputError
    from symgen_datasets.pipeline.settings import GenerateSettings

    with pytest.raises(InputError, match="--price-per-mtok"):
        GenerateSettings(task="geoquery_sql", price_per_mtok=prices).check()


def test_max_tokens_billed_stops_cleanly_and_the_same_command_resumes(tmp_path, oracle, capsys):
    with LLMServer(oracle, n_support="full") as server:
        def openai_args(out, *extra):  # one request at a time: a budget is checked before each request
            return ["generate", "geoquery_sql", "--generator", f"openai:{server.url}#m", "--num-questions", "12",
                    "--num-samples", "5", "--min-votes", "2", "--concurrency", "1", "--output", str(out), *extra]

        clean = tmp_path / "clean"
        assert main(openai_args(clean)) == 0
        summary = capsys.readouterr().out
        billed = sum(int(line.split()[-1].replace(",", "")) for line in summary.splitlines()
                     if line.startswith(("prompt tokens billed", "completion tokens billed")))
        whole = server.requests
        out = tmp_path / "out"
        budget = str(billed // 3)
        assert main(openai_args(out, "--max-tokens-billed", budget)) == 3
        err = capsys.readouterr().err
        assert f"stopped at --max-tokens-billed {budget}" in err and not out.exists()
        first = server.requests - whole
        assert main(openai_args(out)) == 0
        assert 0 < first < whole and server.requests - whole <= whole + 1  # the 1-token check is asked again
    assert rows(out) == rows(clean)
    assert main(["generate", "geoquery_sql", "--max-tokens-billed", "10", "--no-cache"]) == 2
    assert "--max-tokens-billed needs the response cache" in capsys.readouterr().err


def test_dry_run_estimates_the_prompt_tokens_with_n(tmp_path, oracle, capsys):
    with LLMServer(oracle, n_support="full") as server:
        assert main(["generate", "geoquery_sql", "--generator", f"openai:{server.url}#m", "--num-questions", "12",
                     "--num-samples", "5", "--output", str(tmp_path / "out"), "--dry-run"]) == 0
        assert server.requests == 0
    printed = capsys.readouterr().out
    every = int(printed.split("prompt tokens (estimated):")[1].split()[0])
    once = int(printed.split("if the server takes n:")[1].split()[0])
    assert 0 < once < every / 3  # answer prompts once instead of 5 times, question prompts once instead of 4
