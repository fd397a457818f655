"""The agreement-based verifier: execution-based majority vote over sampled candidates.

Source: SymGen (Ye et al., EMNLP 2023, "Generating Data for Symbolic Language with Large Language
Models", §2.3): sample K candidate programs per question, execute them, group the candidates by
execution result and keep the question only when the largest group has at least V votes. This is
self-consistency (Wang et al., ICLR 2023) applied as a filter.

One function for every language: a verifier turns each distinct candidate into an outcome and
says which outcomes agree (:meth:`~symgen_datasets.verifiers.base.Verifier.cluster_labels`:
equal result keys, or a similarity clustering); the vote below is the same for all.

Differences from SymGen's released code, on purpose:

* every candidate counts as a vote, duplicates included: deduplication is only an execution
  cache (each distinct program runs once), never a vote filter;
* duplicates are found after the verifier's normalisation anywhere in the list, not only when
  adjacent;
* the representative program of the winning cluster is the one with the highest mean token
  log-probability, or the most frequent one when the backend gives no log-probabilities; for a
  *fuzzy* agreement (NL2Bash's BLEU clusters, where members are different programs: the right
  command and its corruptions), the member with the most samples of its own, then the highest
  log-probability (``representative="support"``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, Container, Sequence

from .base import ExecutionResult, fold_whitespace


def distinct_programs(candidates: Sequence[str], normalize: Callable[[str], str] = fold_whitespace) -> tuple[list[str], list[int]]:
    """Deduplicate candidates after ``normalize`` (the verifier's
    :meth:`~symgen_datasets.verifiers.base.Verifier.normalize`).

    Returns:
        ``(programs, index)``: the distinct normalised programs in order of first appearance,
        and for each candidate the position of its program in ``programs``.
    """
    position: dict[str, int] = {}
    of_text: dict[str, int] = {}  # sampled programs often repeat verbatim: normalise each text once
    index = []
    for candidate in candidates:
        found = of_text.get(candidate)
        if found is None:
            found = of_text[candidate] = position.setdefault(normalize(candidate), len(position))
        index.append(found)
    return list(position), index


@dataclass
class VoteResult:
    """The outcome of the majority vote for one question.

    Attributes:
        program: the representative program of the winning cluster (``None`` if no candidate
            passed the verifier).
        winner: the representative's position among the distinct programs (``None`` likewise).
        votes: candidates (duplicates included) in the winning cluster.
        num_candidates: candidates sampled.
        num_executable: candidates whose outcome is ``ok`` (executed, or parsed and checked,
            without error), whether or not they vote (an empty SQL result may abstain).
        num_distinct_programs: distinct programs after normalisation.
        num_distinct_results: clusters, i.e. distinct execution results.
        logprob: the representative's mean token log-probability, if known.
        cluster_sizes: votes of every cluster, largest first.
    """

    program: str | None
    votes: int
    num_candidates: int
    num_executable: int
    num_distinct_programs: int
    num_distinct_results: int
    logprob: float | None
    cluster_sizes: list[int] = field(default_factory=list)
    winner: int | None = None


def majority_vote(
    candidates: Sequence[str],
    outcomes: Sequence[ExecutionResult],
    logprobs: Sequence[float | None] | None = None,
    distinct: tuple[list[str], list[int]] | None = None,
    labels: Sequence[str | None] | None = None,
    barred: Container[str] = (),
    representative: str = "logprob",
) -> VoteResult:
    """Cluster candidates by outcome and pick the largest cluster.

    Args:
        candidates: the K sampled programs (raw, duplicates included).
        outcomes: one :class:`ExecutionResult` per *distinct* program, in the order of
            :func:`distinct_programs`.
        logprobs: one mean token log-probability per candidate (``None`` entries allowed).
        distinct: ``distinct_programs(candidates)``, when the caller has it already (with the
            verifier's normalisation; the default normalisation otherwise).
        labels: one cluster label per distinct program (``None`` where it failed), from the
            verifier's :meth:`~symgen_datasets.verifiers.base.Verifier.cluster_labels`;
            default: the outcome keys (candidates agree when their results are equal).
        barred: labels of clusters that take part in the vote but never win: when one ranks
            first, the question has no winner (``program`` ``None``, 0 votes). SQL's empty result
            under ``empty_results="reject"`` is one.
        representative: how the winning cluster's program is chosen: ``"logprob"`` (highest
            log-probability, then most samples; right when members agree exactly, e.g. equal
            SQL results) or ``"support"`` (most samples of its own, then log-probability; for
            fuzzy clusters, whose members are different programs).

    Returns:
        A :class:`VoteResult`. Cluster ties (same votes) are broken by the cluster's mean
        log-probability over all its samples, then by first appearance; the representative is the program with the highest
        log-probability, then the most frequent, then the first seen.

    Raises:
        ValueError: ``outcomes`` does not match the number of distinct programs.
    """
    programs, index = distinct if distinct is not None else distinct_programs(candidates)
    if len(outcomes) != len(programs):
        raise ValueError(f"got {len(outcomes)} outcomes for {len(programs)} distinct programs")
    logprobs = list(logprobs) if logprobs is not None else [None] * len(candidates)
    frequency = Counter(index)
    best_logprob: dict[int, float] = {}
    for program, logprob in zip(index, logprobs):
        if logprob is not None and logprob > best_logprob.get(program, float("-inf")):
            best_logprob[program] = logprob

    if labels is None:
        labels = [outcome.key if outcome.ok else None for outcome in outcomes]
    clusters: dict[str, list[int]] = {}
    for program, (outcome, label) in enumerate(zip(outcomes, labels)):
        if outcome.ok and label is not None:
            clusters.setdefault(label, []).append(program)
    num_executable = sum(frequency[p] for p, outcome in enumerate(outcomes) if outcome.ok)
    if not clusters:
        return VoteResult(None, 0, len(candidates), num_executable, len(programs), 0, None, [])

    member_logprobs: dict[int, list[float]] = {}
    for program, logprob in zip(index, logprobs):
        if logprob is not None:
            member_logprobs.setdefault(program, []).append(logprob)

    def cluster_rank(members: list[int]) -> tuple:
        votes = sum(frequency[p] for p in members)
        values = [v for p in members for v in member_logprobs.get(p, ())] if member_logprobs else ()
        confidence = sum(values) / len(values) if values else float("-inf")
        return (votes, confidence, -min(members))

    def program_rank(program: int) -> tuple:
        if representative == "support":
            return (frequency[program], best_logprob.get(program, float("-inf")), -program)
        return (best_logprob.get(program, float("-inf")), frequency[program], -program)

    ranked = sorted(((cluster_rank(members), members, label) for label, members in clusters.items()),
                    key=itemgetter(0), reverse=True)
    if ranked[0][2] in barred:
        return VoteResult(None, 0, len(candidates), num_executable, len(programs), len(clusters), None,
                          [rank[0] for rank, _, _ in ranked])
    winner = max(ranked[0][1], key=program_rank)
    return VoteResult(
        program=programs[winner],
        votes=ranked[0][0][0],
        num_candidates=len(candidates),
        num_executable=num_executable,
        num_distinct_programs=len(programs),
        num_distinct_results=len(clusters),
        logprob=best_logprob.get(winner),
        cluster_sizes=[rank[0] for rank, _, _ in ranked],
        winner=winner,
    )
