"""Adaptive voting: the exact stop never changes the outcome, the statistical one is what
Adaptive-Consistency computes, and runs through real loopback servers keep the same questions
with the same winning clusters while asking fewer candidates."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections import Counter
from pathlib import Path

import datasets
import pytest

from symgen_datasets.cli import main
from symgen_datasets.pipeline.voting import (beta_lead, reach_probability, round_size, settled,
                                             smallest_settling_round)
from tests.llm_servers import LLMServer


def final_outcome(votes: dict[str, int], barred: set[str], min_votes: int) -> tuple[bool, str | None, bool]:
    """(kept, winning label, whether the win is strict) of the full vote."""
    if not votes:
        return False, None, True
    ranked = sorted(votes.items(), key=lambda item: -item[1])
    top, count = ranked[0]
    strict = len(ranked) == 1 or ranked[1][1] < count
    return (top not in barred and count >= min_votes), top, strict


def clusters_of(votes: dict[str, int], barred: set[str]) -> list[tuple[int, bool]]:
    return sorted(((n, label in barred) for label, n in votes.items()), key=lambda item: -item[0])


@pytest.mark.parametrize("num_samples,min_votes", [(5, 2), (6, 3), (7, 2), (5, 5)])
def test_the_exact_rule_stops_only_when_no_continuation_changes_the_outcome(num_samples, min_votes):
    """Every sequence of candidates over three clusters (one barred) and failures: wherever the
    exact rule stops, every way of sampling the remaining candidates keeps the question or not
    alike, with the same strict winner; and the rule stops at the latest when all are sampled."""
    barred = {"empty"}
    choices = ["a", "b", "empty", None]  # None: a candidate that failed
    stops = 0
    for sequence in itertools.product(choices, repeat=num_samples):
        votes: Counter = Counter()
        for sampled, choice in enumerate(sequence, start=1):
            if choice is not None:
                votes[choice] += 1
            if settled(clusters_of(votes, barred), sampled, num_samples, min_votes, "exact"):
                break
        else:
            raise AssertionError("never settled")
        if sampled == num_samples:
            continue
        stops += 1
        kept, winner, strict = final_outcome(votes, barred, min_votes)
        for rest in itertools.product(choices + ["new"], repeat=num_samples - sampled):
            final = votes + Counter(c for c in rest if c is not None)
            final_kept, final_winner, final_strict = final_outcome(final, barred, min_votes)
            assert final_kept == kept, (sequence[:sampled], rest)
            if kept:
                assert final_winner == winner and final_strict, (sequence[:sampled], rest)
    assert stops > 0


def test_beta_lead_is_adaptive_consistency_s_beta_criterion():
    """P(p > 1/2) for p ~ Beta(a + 1, b + 1), against numerical integration of the density."""
    for first, second in [(4, 0), (5, 1), (3, 3), (10, 2), (0, 0)]:
        a, b = first + 1, second + 1
        steps = 200_000
        norm = math.gamma(a) * math.gamma(b) / math.gamma(a + b)
        integral = sum(((0.5 + (i + 0.5) / (2 * steps)) ** (a - 1)) * ((0.5 - (i + 0.5) / (2 * steps)) ** (b - 1))
                       for i in range(steps)) / (2 * steps) / norm
        assert beta_lead(first, second) == pytest.approx(integral, abs=1e-6)
    assert beta_lead(4, 0) == pytest.approx(1 - 0.5 ** 5)


def test_reach_probability_matches_a_simulation():
    rng = random.Random(0)
    clusters, sampled, remaining, min_votes = [(2, False)], 8, 12, 5
    hits = 0
    trials = 40_000
    for _ in range(trials):
        share = rng.betavariate(3, 7)
        hits += sum(rng.random() < share for _ in range(remaining)) >= 3
    single = hits / trials
    bound = reach_probability(clusters, sampled, remaining, min_votes)
    new_cluster = reach_probability([], sampled, remaining, min_votes)
    assert bound == pytest.approx(single + new_cluster, abs=0.01)


def test_round_sizes_follow_the_bill():
    # per-candidate requests: the smallest round that could settle the question (11 of 20 must agree)
    assert smallest_settling_round([], 0, 20, 5, "exact") == 11
    assert round_size([], 0, 20, 5, "exact", 0.95, prompt_tokens=0, completion_tokens=12) == 11
    assert round_size([], 0, 20, 5, "adaptive", 0.95, prompt_tokens=0, completion_tokens=12) == 5
    # a prompt billed once per request: a round never pays more for its prompt than for its samples
    assert round_size([], 0, 20, 5, "exact", 0.95, prompt_tokens=600, completion_tokens=12) == 20
    assert round_size([], 0, 20, 5, "exact", 0.95, prompt_tokens=150, completion_tokens=10) == 15
    # after 11: 6 and 2 votes, 9 left: 3 more agreeing candidates would settle it
    assert round_size([(6, False), (2, False)], 11, 20, 5, "exact", 0.95, 0, 12) == 3
    assert round_size([], 0, 20, 5, "fixed", 0.95, 0, 12) == 20 == round_size([], 0, 20, 5, "all", 0.95, 0, 12)


# --- runs through real loopback servers --------------------------------------------------------

@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    """30 GeoQuery-SQL dev questions (the oracle knows their gold queries)."""
    from symgen_datasets.tasks import get_task

    rows = [json.loads(line) for line in get_task("geoquery_sql").references_path().read_text().splitlines()][:30]
    path = tmp_path_factory.mktemp("voting") / "questions.jsonl"
    path.write_text("".join(json.dumps({"question": r["question"], "db_id": r["db_id"]}) + "\n" for r in rows))
    return path


@pytest.fixture()
def args(questions):
    def build(spec: str, out: Path, *extra: str) -> list[str]:
        return ["generate", "geoquery_sql", "--generator", spec, "--questions", str(questions), "--num-samples", "10",
                "--min-votes", "3", "--seed", "5", "--concurrency", "8", "--output", str(out), *extra]

    return build


def verified(out: Path) -> dict[str, dict]:
    return {row["question"]: row for row in datasets.load_dataset(str(out), "candidates", split="train")}


def winning_result(row: dict) -> str | None:
    """The result key of the row's winning cluster (the representative's result)."""
    if not row["query"]:
        return None
    position = row["candidates"].index(row["query"]) if row["query"] in row["candidates"] else None
    if position is None:  # the representative is a normalised candidate
        from symgen_datasets.verifiers.sqlite import normalize_sql

        position = [normalize_sql(c) for c in row["candidates"]].index(normalize_sql(row["query"]))
    return row["candidate_result"][position]


def kept(out: Path) -> dict[str, str]:
    return {q: winning_result(r) for q, r in verified(out).items() if r["votes"] >= 3 and r["query"]}


def test_exact_voting_keeps_the_same_questions_and_winning_clusters_as_all_k_with_fewer_requests(tmp_path, oracle, capsys,
                                                                                                  args):
    """TGI (one request per candidate, each seeded as under fixed sampling): the exact rule's
    candidates are a prefix of the fixed run's, and it keeps the same questions with the same
    winning clusters, sampling fewer candidates."""
    with LLMServer(oracle) as server:
        assert main(args(f"tgi:{server.url}", tmp_path / "fixed", "--sampling", "fixed")) == 0
        fixed_requests = server.requests
        assert main(args(f"tgi:{server.url}", tmp_path / "exact")) == 0
        exact_requests = server.requests - fixed_requests
    summary = capsys.readouterr().out
    fixed, exact = verified(tmp_path / "fixed"), verified(tmp_path / "exact")
    assert fixed.keys() == exact.keys()
    for question, row in exact.items():
        assert row["candidates"] == fixed[question]["candidates"][:len(row["candidates"])]
    assert kept(tmp_path / "exact") == kept(tmp_path / "fixed") and kept(tmp_path / "fixed")
    sampled = sum(len(r["candidates"]) for r in exact.values())
    assert sampled < 10 * len(exact) and exact_requests < fixed_requests
    assert "saving against SymGen's" in summary
    card = (tmp_path / "exact" / "README.md").read_text()
    assert "| sampling | `exact`: rounds of candidates" in card and "sampled per question)" in card
    assert "| saving against SymGen's procedure |" in card


def test_on_a_server_that_takes_n_exact_voting_asks_one_request_per_question_and_fixed_one_per_candidate(tmp_path, oracle,
                                                                                                           args):
    """The few-shot prompt costs far more than a candidate: a round with n=K is the cheapest
    under the bill, so each question is one request; ``--sampling fixed`` is SymGen's K
    requests without n."""
    with LLMServer(oracle, n_support="full") as server:
        assert main(args(f"openai:{server.url}#m", tmp_path / "exact")) == 0
        answers = [r for r in server.seen if r["parameters"].get("max_tokens") == 200]
        assert len(answers) == 30 and all(r["parameters"]["n"] == 10 for r in answers)
        start = len(server.seen)
        assert main(args(f"openai:{server.url}#m", tmp_path / "fixed", "--sampling", "fixed")) == 0
        answers = [r for r in server.seen[start:] if r["parameters"].get("max_tokens") == 200]
        assert len(answers) == 300 and all("n" not in r["parameters"] for r in answers)
    card = (tmp_path / "exact" / "README.md").read_text()
    saving = float(card.split("| saving against SymGen's procedure | ")[1].split("x")[0])
    assert saving > 5


def test_adaptive_voting_samples_fewer_candidates_and_the_card_says_its_confidence(tmp_path, oracle, args):
    with LLMServer(oracle) as server:
        assert main(args(f"tgi:{server.url}", tmp_path / "exact")) == 0
        assert main(args(f"tgi:{server.url}", tmp_path / "adaptive", "--sampling", "adaptive", "--confidence", "0.9")) == 0
    exact, adaptive = verified(tmp_path / "exact"), verified(tmp_path / "adaptive")
    assert sum(len(r["candidates"]) for r in adaptive.values()) < sum(len(r["candidates"]) for r in exact.values())
    for question, row in adaptive.items():  # the same seeds: a prefix of one another
        shorter = min(len(row["candidates"]), len(exact[question]["candidates"]))
        assert row["candidates"][:shorter] == exact[question]["candidates"][:shorter]
    card = (tmp_path / "adaptive" / "README.md").read_text()
    assert "with probability 0.9 (Adaptive-Consistency's Beta criterion)" in card


def test_a_fuzzy_agreement_gets_all_k_candidates_under_exact_voting(tmp_path):
    """NL2Bash's BLEU clusters form from all the candidates together: no early stop, even where
    the first candidates agree."""
    from symgen_datasets.tasks import get_task
    from tests.llm_servers import OracleResponder

    dev = [json.loads(line) for line in get_task("nl2bash").references_path().read_text().splitlines()][:8]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"nl": r["nl"]}) + "\n" for r in dev))
    with LLMServer(OracleResponder({r["nl"]: r["bash"] for r in dev}, accuracy=0.9)) as server:
        assert main(["generate", "nl2bash", "--generator", f"tgi:{server.url}", "--questions", str(questions),
                     "--num-samples", "6", "--min-votes", "2", "--output", str(tmp_path / "out")]) == 0
    rows = datasets.load_dataset(str(tmp_path / "out"), "candidates", split="train")
    assert len(rows) == 8 and all(len(row["candidates"]) == 6 for row in rows)
    assert max(row["votes"] for row in rows) >= 4  # agreement early on, and still all K sampled


@pytest.mark.parametrize("value,message", [("sometimes", "--sampling 'sometimes'"), ("1.5", "--confidence 1.5")])
def test_bad_sampling_options_are_refused_before_anything_is_sent(value, message, capsys):
    flag = "--sampling" if not value[0].isdigit() else "--confidence"
    assert main(["generate", "geoquery_sql", flag, value, "--num-questions", "2"]) == 2
    assert message in capsys.readouterr().err


def test_the_dry_run_estimates_the_bill_under_the_chosen_sampling(tmp_path, capsys):
    with LLMServer(lambda prompt, parameters, seed: ("SELECT 1;\n\n", [-0.1]), n_support="full") as server:
        for sampling in ("fixed", "exact"):
            assert main(["generate", "geoquery_sql", "--generator", f"openai:{server.url}#m", "--num-questions", "4",
                         "--sampling", sampling, "--output", str(tmp_path / sampling), "--dry-run"]) == 0
        assert server.requests == 0
    fixed, exact = capsys.readouterr().out.split("sampling:                    fixed")
    assert "if the server takes n" not in fixed  # SymGen's procedure: one request per candidate
    assert "if the server takes n" in exact and "at most" in exact and "sampling:                    exact" in exact


def test_the_dataset_map_function_asks_one_request_per_candidate_only_under_fixed(oracle):
    """``generate_answers`` (the batched ``Dataset.map`` stage): K candidates per question either
    way; ``fixed`` sends K requests without n, ``all`` one request with n=K."""
    from symgen_datasets.generators import EventLoopThread, from_spec
    from symgen_datasets.pipeline import StageContext, generate_answers
    from symgen_datasets.tasks import get_task

    task = get_task("geoquery_sql")
    knowledge = task.load_knowledge(task.options_with_defaults({}))
    demonstrations = task.load_demonstrations(None, 4000, None)
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()][:3]
    batch = {"question": [r["question"] for r in dev], "db_id": [r["db_id"] for r in dev]}
    loop = EventLoopThread()
    try:
        with LLMServer(oracle, n_support="full") as server:
            generator = from_spec(f"openai:{server.url}#m")
            loop.run(generator.check())
            columns = {}
            for sampling in ("fixed", "all"):
                start = len(server.seen)
                context = StageContext(task=task, knowledge=knowledge, demonstrations=demonstrations, generator=generator,
                                       loop=loop, num_samples=4, sampling=sampling)
                columns[sampling] = generate_answers(dict(batch), [0, 1, 2], context)
                asked = server.seen[start:]
                assert len(asked) == (12 if sampling == "fixed" else 3)
                assert all(r["parameters"].get("n", 1) == (1 if sampling == "fixed" else 4) for r in asked)
            loop.run(generator.aclose())
    finally:
        loop.close()
    assert all(len(c) == 4 for sampling in columns for c in columns[sampling]["candidates"])
