"""Bash commands, never executed: parsed with bashlex, clustered by token-sequence similarity.

A candidate is valid when bashlex parses it and its first command is a known utility (the
task's inventory, built from the training data; a path such as ``/usr/bin/find`` counts by its
name, and a command word that is a substitution, ``$(...)``, by the commands inside it). Its result key is its bashlex token sequence
(JSON). Two candidates agree by similarity, as in SymGen's nl2bash filter: sentence BLEU of one
token sequence against the other, averaged both ways (sacrebleu, no tokenisation, its default
exponential smoothing), at least :data:`AGREEMENT_THRESHOLD`.

Similarity is not transitive, so clusters are formed greedily ("leader" clustering): distinct
candidates are taken most frequent first (ties: first sampled), and each joins the first cluster
whose *leader* it is similar enough to, or leads a new one. A cluster's votes are then counted
by the shared vote, every sample of every member included.

The threshold was measured on the 609 real NL2Bash dev commands: between unrelated commands with
the same first utility (6,947 pairs) the similarity's 99th percentile is 0.31 and its maximum
0.60; a command and itself with one token dropped or replaced score 0.66 / 0.60 at the median
(above 0.5 three times out of four). At 0.5, unrelated commands almost never merge, near
variants mostly do.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from .base import ExecutionResult
from .pool import Chunk, PooledVerifier

#: Two candidates agree when their BLEU similarity, averaged both ways, is at least this.
AGREEMENT_THRESHOLD = 0.5


def command_names(trees: Sequence[Any]) -> list[str]:
    """The command names of parsed bashlex trees, in order: the first word of each simple
    command (redirections and assignments before it skipped), nested commands included."""
    import bashlex

    names: list[str] = []

    class Visitor(bashlex.ast.nodevisitor):
        def visitcommand(self, node, parts):
            for part in parts:
                if part.kind == "word":
                    names.append(part.word)
                    break
                if part.kind not in ("redirect", "assignment"):
                    break

    for tree in trees:
        Visitor().visit(tree)
    return names


def check_bash(program: str, utilities: frozenset[str]) -> ExecutionResult:
    """Verify one Bash command line (in the calling process).

    Returns:
        ``ok`` with the JSON list of its bashlex tokens as key, or ``error`` when bashlex cannot
        parse it or its first command is not in ``utilities``; never raises.
    """
    import bashlex

    try:
        trees = bashlex.parse(program)
        tokens = list(bashlex.split(program))
    except Exception as error:  # noqa: BLE001 - bashlex raises several kinds on bad input
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return ExecutionResult("error", error=f"bashlex cannot parse it: {first}")
    # a command word that is itself a substitution runs what its inner commands print: those
    # come next in the list; a path-qualified command (/usr/bin/find) is known by its name
    names = [name.rsplit("/", 1)[-1] for name in command_names(trees) if not name.startswith(("$(", "`"))]
    if names and names[0] not in utilities:
        return ExecutionResult("error", error=f"{names[0]!r} is not a known utility")
    return ExecutionResult("ok", key=json.dumps(tokens, ensure_ascii=False))


def _check_chunk(groups: Chunk, utilities: frozenset[str]) -> list[ExecutionResult]:
    return [check_bash(program, utilities) for _, programs in groups for program in programs]


def similarity(a: Sequence[str], b: Sequence[str]) -> float:
    """Sentence BLEU of token sequence ``a`` against ``b`` and of ``b`` against ``a``, averaged,
    in [0, 1] (sacrebleu, no tokenisation: the tokens are bashlex's)."""
    import sacrebleu

    left = " ".join("\u2581".join(token.split()) or "\u2581" for token in a)
    right = " ".join("\u2581".join(token.split()) or "\u2581" for token in b)
    if left == right:
        return 1.0
    forward = sacrebleu.sentence_bleu(left, [right], tokenize="none").score
    backward = sacrebleu.sentence_bleu(right, [left], tokenize="none").score
    return (forward + backward) / 200.0


class BashVerifier(PooledVerifier):
    """The NL2Bash verifier: bashlex parse + known first utility, in worker processes;
    agreement by BLEU similarity of token sequences with leader clustering (see the module).

    Args:
        utilities: the known utilities (an object with a ``utilities`` set, e.g. the task's
            knowledge, or the set itself).
        timeout_s: the time limit of one candidate's parse (seconds).
        threshold: the similarity at which candidates agree.
    """

    name = "bash"
    outcome_word = "valid"
    chunk_function = staticmethod(_check_chunk)
    #: parsing only (never executed): no per-candidate alarm needed
    limit_each_candidate = False

    def __init__(self, utilities: Any, timeout_s: float = 5.0, threshold: float = AGREEMENT_THRESHOLD):
        self.utilities = frozenset(getattr(utilities, "utilities", utilities))
        self.timeout_s = timeout_s
        self.threshold = threshold

    #: BLEU clusters hold the right command and its corruptions: the member sampled most often
    #: represents the cluster, not the one the model was most confident about.
    representative = "support"
    #: leaders depend on every candidate's frequency: a new candidate can regroup the clusters
    stable_labels = False

    def worker_options(self) -> Any:
        return self.utilities

    def cluster_labels(self, outcomes: Sequence[ExecutionResult], index: Sequence[int]) -> list[str | None]:
        """Leader clustering by :func:`similarity` (most frequent candidates lead); the label of
        a candidate is its leader's key."""
        counts = [0] * len(outcomes)
        for program in index:
            counts[program] += 1
        order = sorted((i for i, outcome in enumerate(outcomes) if outcome.ok), key=lambda i: (-counts[i], i))
        leaders: list[tuple[str, list[str]]] = []
        labels: list[str | None] = [None] * len(outcomes)
        for i in order:
            tokens = json.loads(outcomes[i].key)
            for key, leader_tokens in leaders:
                if outcomes[i].key == key or similarity(tokens, leader_tokens) >= self.threshold:
                    labels[i] = key
                    break
            else:
                leaders.append((outcomes[i].key, tokens))
                labels[i] = outcomes[i].key
        return labels

    def describe(self) -> str:
        return (f"every candidate parsed with bashlex (never executed) and its first command checked against "
                f"{len(self.utilities)} known utilities; candidates agree when the BLEU similarity of their token "
                f"sequences, averaged both ways, is at least {self.threshold:g} (greedy clusters led by the most "
                "frequent candidates)")
