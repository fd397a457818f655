"""An example task for symgen-datasets, in a package of its own: arithmetic word problems to
Python-style expressions ("what is seven times six plus two" -> "7 * 6 + 2").

Everything a task needs is here: its fields, its prompts (``prompts/``), its demonstrations
(``data/arith/10_shot.jsonl``) and an executing verifier that evaluates a candidate expression
safely (numbers and + - * / // % ** only, in worker processes) so that candidates agree when
their values do.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from typing import Any, ClassVar

from symgen_datasets.tasks import Task
from symgen_datasets.verifiers import ExecutionResult
from symgen_datasets.verifiers.pool import PooledVerifier

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


def evaluate(node: ast.AST) -> float:
    """The value of an arithmetic expression tree (numbers and + - * / // % ** only).

    Raises:
        ValueError: anything else (names, calls, huge powers...).
    """
    if isinstance(node, ast.Expression):
        return evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = evaluate(node.left), evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def check_expression(expression: str) -> ExecutionResult:
    """Evaluate one candidate; ``ok`` with its value (rounded to 9 decimals) as key."""
    try:
        value = evaluate(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError) as error:
        return ExecutionResult("error", error=f"{type(error).__name__}: {error}")
    return ExecutionResult("ok", key=repr(round(float(value), 9)))


def _check_chunk(groups, options) -> list[ExecutionResult]:
    """The verifier's work in a worker process: every program of every ``(context, programs)`` group."""
    return [check_expression(program) for _, programs in groups for program in programs]


class ArithVerifier(PooledVerifier):
    """Evaluates candidate expressions in worker processes; candidates agree when their values do."""

    name = "arith"
    outcome_word = "executable"
    chunk_function = staticmethod(_check_chunk)

    def __init__(self, knowledge: Any = None, timeout_s: float = 5.0):
        # each candidate runs under this limit in its worker (PooledVerifier.limit_each_candidate):
        # one that runs past it is a `timeout`, and the others of its batch run on
        self.timeout_s = timeout_s

    def describe(self) -> str:
        return "every candidate expression evaluated (numbers and + - * / // % ** only); candidates agree when their values do"


@dataclass(frozen=True)
class ArithTask(Task):
    """Arithmetic word problems (``question``) to expressions (``expression``)."""

    family: ClassVar[str] = "arithmetic"
    question_field: ClassVar[str] = "question"
    answer_field: ClassVar[str] = "expression"
    field_descriptions: ClassVar[dict[str, str]] = {"question": "an arithmetic word problem",
                                                    "expression": "the expression that answers it"}
    tags: ClassVar[tuple[str, ...]] = ("arithmetic",)
    question_template: ClassVar[str] = "arith_question.j2"
    answer_template: ClassVar[str] = "arith_answer.j2"
    template_package: ClassVar[str] = "symgen_arith"
    verifier_class: ClassVar[type] = ArithVerifier


ARITH = ArithTask(
    name="arith",
    pretty_name="Arithmetic expressions (synthetic, example plugin)",
    description="arithmetic word problems to expressions (an example task from a package of its own)",
    license="apache-2.0",
    source_datasets=(),
    data_dir="arith",
    data_package="symgen_arith",
    instruction="Write the arithmetic expression that answers each question.",
)
