"""Adaptive voting: sample a question's candidates in rounds and stop as soon as more samples
cannot (``exact``) or are unlikely to (``adaptive``) change the question's outcome.

SymGen (Ye et al., EMNLP 2023, §2.3) samples K candidates per question and keeps the question when
its largest cluster of agreeing candidates has at least V votes. Most of those K samples are often
wasted: with V=5 of K=20, a question whose first 11 candidates agree is kept with that cluster
whatever the other 9 say. This module decides, from the clusters so far, whether the outcome is
settled (:func:`settled`) and how many candidates the next round asks for (:func:`round_size`).

Sampling modes (``--sampling``):

* ``fixed``: SymGen's procedure: every question gets K candidates, one request per candidate
  (the prompt is sent, and billed, K times). The reference the bill's saving is measured against.
* ``all``: every question gets K candidates, from requests with ``n`` > 1 where the server takes
  them (the prompt sent once); the vote counts of all K (what ``symgen calibrate`` needs).
* ``exact`` (the default): rounds that stop when the outcome can no longer change: the question
  is rejected when no cluster can reach V, and kept when its largest cluster has V votes and a
  lead that the remaining candidates cannot overtake (ties included). It keeps exactly the
  questions, with the same winning clusters, that sampling the remaining candidates of the same
  requests would keep (the representative program of the cluster may differ). Clusters must not
  depend on each other for this (equal results: SQL, Prolog, Python, MTOP, Break); a verifier
  with fuzzy clusters (NL2Bash's BLEU leaders) gets all K at once.
* ``adaptive``: ``exact``, plus the statistical stop of Adaptive-Consistency (Aggarwal et al.,
  EMNLP 2023, "Let's Sample Step by Step"): stop when the largest cluster has V votes and a Beta
  posterior on the share of the two largest clusters gives it the lead with probability at least
  ``confidence``; and reject when, under Beta posteriors on each cluster's share of the samples,
  the probability that any cluster reaches V (a union bound, a new cluster included) falls under
  ``1 - confidence``. Not exact: it trades some kept rows for fewer samples.

Round sizes come from the bill. Every round re-sends the prompt, so where a request's prompt is
billed once for all its samples (``n`` > 1) a round asks for at least ``prompt tokens /
completion tokens`` candidates (a round never pays more for its prompt than for its samples),
which on long few-shot prompts means one request for all K. Where every candidate is its own
request (TGI, a server without ``n``), rounds cost nothing extra, and each round is the smallest
that could settle the question.
"""

from __future__ import annotations

import math
from typing import Container, Sequence

from ..verifiers import ExecutionResult

#: ``--sampling`` values, in the order of the README's table.
SAMPLING_MODES = ("fixed", "all", "exact", "adaptive")

#: ``(votes, barred)`` of each cluster, largest first (see :func:`tally`).
Clusters = list[tuple[int, bool]]


def tally(outcomes: Sequence[ExecutionResult], index: Sequence[int], labels: Sequence[str | None] | None,
          barred: Container[str] = ()) -> Clusters:
    """The clusters of a question's candidates so far, as the vote counts them.

    Args:
        outcomes: one outcome per distinct program (as :func:`~symgen_datasets.verifiers.majority_vote`).
        index: for each candidate, the position of its program in ``outcomes``.
        labels: the verifier's cluster label per distinct program (``None``: failed), or ``None``
            for the outcome keys.
        barred: labels that take part in the vote but never win.

    Returns:
        ``(votes, barred)`` per cluster, largest first.
    """
    if labels is None:
        labels = [outcome.key if outcome.ok else None for outcome in outcomes]
    votes: dict[str, int] = {}
    for program in index:
        label = labels[program]
        if outcomes[program].ok and label is not None:
            votes[label] = votes.get(label, 0) + 1
    return sorted(((count, label in barred) for label, count in votes.items()), key=lambda item: -item[0])


def beta_lead(first: int, second: int) -> float:
    """P(p1 > p2) for the shares of the two largest clusters, under Adaptive-Consistency's Beta
    criterion: ``p ~ Beta(first + 1, second + 1)``, the probability that ``p > 1/2``.

    For integer parameters ``P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) <= a - 1)``, computed
    exactly here (no SciPy)."""
    trials = first + second + 1
    return sum(math.comb(trials, k) for k in range(first + 1)) / 2 ** trials


def _beta_binomial_tail(need: int, draws: int, alpha: float, beta: float) -> float:
    """P(X >= need) for X ~ BetaBinomial(draws, alpha, beta)."""
    if need <= 0:
        return 1.0
    if need > draws:
        return 0.0
    log_norm = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    total = 0.0
    for k in range(need, draws + 1):
        log_choose = math.lgamma(draws + 1) - math.lgamma(k + 1) - math.lgamma(draws - k + 1)
        log_b = math.lgamma(k + alpha) + math.lgamma(draws - k + beta) - math.lgamma(draws + alpha + beta)
        total += math.exp(log_choose + log_b - log_norm)
    return min(1.0, total)


def reach_probability(clusters: Clusters, sampled: int, remaining: int, min_votes: int) -> float:
    """An upper bound on the probability that some cluster that may win ends with ``min_votes``
    votes: each cluster's share of the samples has the posterior ``Beta(votes + 1, sampled - votes
    + 1)``, its remaining votes are Beta-binomial, and the bound is the sum over the clusters that
    are not barred and one new cluster."""
    free = [votes for votes, barred in clusters if not barred] + [0]
    return min(1.0, sum(_beta_binomial_tail(min_votes - votes, remaining, votes + 1, sampled - votes + 1)
                        for votes in free))


def settled(clusters: Clusters, sampled: int, num_samples: int, min_votes: int, rule: str = "exact",
            confidence: float = 0.95) -> bool:
    """Whether the question's outcome (kept or not, and which cluster wins) is settled after
    ``sampled`` of ``num_samples`` candidates.

    ``exact``: (a) no cluster that may win, nor a new one, can reach ``min_votes`` with the
    remaining candidates, or (b) the largest cluster leads the second by more than the remaining
    candidates (so no tie-break can matter) and is barred (rejected) or has ``min_votes`` (kept).
    ``adaptive`` adds the statistical stops described in the module's docstring.

    Args:
        clusters: :func:`tally` of the candidates so far.
        rule: ``exact`` or ``adaptive`` (``fixed`` and ``all``: settled only when all are sampled).
    """
    remaining = num_samples - sampled
    if remaining <= 0:
        return True
    if rule not in ("exact", "adaptive"):
        return False
    first, first_barred = clusters[0] if clusters else (0, False)
    second = clusters[1][0] if len(clusters) > 1 else 0
    best_free = max((votes for votes, barred in clusters if not barred), default=0)
    if best_free + remaining < min_votes:
        return True
    if clusters and first > second + remaining and (first_barred or first >= min_votes):
        return True
    if rule == "adaptive":
        if clusters and (first_barred or first >= min_votes) and first > second and beta_lead(first, second) >= confidence:
            return True
        if sampled and reach_probability(clusters, sampled, remaining, min_votes) < 1 - confidence:
            return True
    return False


def _with_votes(clusters: Clusters, position: int | None, extra: int) -> Clusters:
    """``clusters`` with ``extra`` more votes for cluster ``position`` (``None``: a new cluster)."""
    changed = list(clusters) if position is not None else list(clusters) + [(0, False)]
    target = position if position is not None else len(changed) - 1
    votes, barred = changed[target]
    changed[target] = (votes + extra, barred)
    return sorted(changed, key=lambda item: -item[0])


def smallest_settling_round(clusters: Clusters, sampled: int, num_samples: int, min_votes: int, rule: str,
                            confidence: float = 0.95) -> int:
    """The fewest more candidates after which the question could be settled: the first ``s``
    for which one of the extreme outcomes (all ``s`` join the largest cluster, the largest one
    that may win, a new cluster, or all fail) settles it; all the remaining ones when none does."""
    remaining = num_samples - sampled
    free = next((i for i, (_, barred) in enumerate(clusters) if not barred), None)
    targets = {0 if clusters else None, free, None}
    for extra in range(1, remaining + 1):
        outcomes = [_with_votes(clusters, target, extra) for target in targets] + [clusters]
        if any(settled(c, sampled + extra, num_samples, min_votes, rule, confidence) for c in outcomes):
            return extra
    return remaining


def round_size(clusters: Clusters, sampled: int, num_samples: int, min_votes: int, rule: str, confidence: float,
               prompt_tokens: float, completion_tokens: float) -> int:
    """How many candidates the next round asks for.

    Args:
        clusters, sampled, num_samples, min_votes, rule, confidence: as :func:`settled`.
        prompt_tokens: what one more request costs on top of its samples: the prompt's tokens
            where a request's prompt is billed once for all its samples (``n`` > 1), 0 where
            every candidate is its own request.
        completion_tokens: the tokens of one candidate (measured on the question's earlier
            rounds, else estimated).

    Returns:
        All remaining candidates for ``fixed``/``all``; otherwise
        :func:`smallest_settling_round`, raised to ``ceil(prompt_tokens / completion_tokens)``
        (a round never pays more for its prompt than for its samples), at most the remaining ones.
    """
    remaining = num_samples - sampled
    if rule not in ("exact", "adaptive") or remaining <= 0:
        return max(remaining, 0)
    smallest = smallest_settling_round(clusters, sampled, num_samples, min_votes, rule, confidence)
    worth = math.ceil(prompt_tokens / max(completion_tokens, 1.0)) if prompt_tokens > 0 else 1
    return min(remaining, max(smallest, worth))
