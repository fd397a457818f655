"""Execution accuracy of `symgen evaluate` against the official Spider test-suite evaluator, on the
same predictions: how many of their decisions differ (target: none).

The predictions are the Spider dev gold queries and variants of them that probe each rule of the
official evaluator: column order swapped, DISTINCT toggled, ORDER BY dropped or reversed, LIMIT
dropped, a literal changed or replaced by the ``value`` placeholder, ``SELECT *``, COUNT(*) ->
COUNT(DISTINCT 1), lower case, spaced operators (``> =``), truncated (broken) queries and another
question's gold query on the same database.

The official evaluator is not part of this project: pass a checkout of
https://github.com/taoyds/test-suite-sql-eval (its ``exec_eval.py`` and ``parse.py``) with
``--official``. It opens the databases read-write, so it runs on a temporary copy.

    python benchmarks/spider_ex_agreement.py --official ~/test-suite-sql-eval --spider ../shared/data/spider
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.tasks import get_task  # noqa: E402


def variants(query: str, same_db: list[str], rng: random.Random) -> dict[str, str]:
    """Predictions derived from a gold query, by kind."""
    import sqlglot
    from sqlglot import exp

    out = {"gold": query, "other_gold": rng.choice(same_db), "broken": query[: max(8, len(query) // 2)],
           "lower": query.lower(), "spaced_ops": query.replace(">=", "> =").replace("<=", "< =").replace("!=", "! =")}
    if "count(*)" in query.lower():
        out["count_distinct"] = re.sub(r"(?i)count\(\*\)", "count(DISTINCT 1)", query, count=1)
    try:
        tree = sqlglot.parse_one(query, read="sqlite")
    except sqlglot.errors.ParseError:
        return out
    if isinstance(tree, exp.Select):
        def edited(**changes):
            copy = tree.copy()
            for key, value in changes.items():
                copy.set(key, value)
            return copy

        if len(tree.expressions) > 1:
            out["swap_columns"] = edited(expressions=list(reversed(tree.copy().expressions))).sql("sqlite")
        out["toggle_distinct"] = edited(distinct=None if tree.args.get("distinct") else exp.Distinct()).sql("sqlite")
        out["star"] = edited(expressions=[exp.Star()]).sql("sqlite")
        if tree.args.get("order"):
            out["drop_order"] = edited(order=None).sql("sqlite")
            flipped = tree.copy()
            for ordered in flipped.args["order"].expressions:
                ordered.set("desc", not ordered.args.get("desc"))
            out["flip_order"] = flipped.sql("sqlite")
        if tree.args.get("limit"):
            out["drop_limit"] = edited(limit=None).sql("sqlite")
    literals = list(tree.find_all(exp.Literal))
    if literals:
        changed = tree.copy()
        literal = next(changed.find_all(exp.Literal))
        if literal.is_string:
            text = literal.this
            literal.replace(exp.Literal.string(text.lower() if text != text.lower() else text.upper()))
        else:
            try:
                literal.replace(exp.Literal.number(float(literal.this) + 1))
            except ValueError:
                pass
        out["literal"] = changed.sql("sqlite")
        slot = tree.copy()
        next(slot.find_all(exp.Literal)).replace(exp.column("value"))
        out["value_slot"] = slot.sql("sqlite").replace("value", " value ")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="a checkout of taoyds/test-suite-sql-eval")
    parser.add_argument("--spider", type=Path, default=ROOT.parent / "shared" / "data" / "spider",
                        help="Spider's folder: dev.json and database/")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(args.official))
    from exec_eval import eval_exec_match  # the official evaluator

    database = args.spider / "database"
    dev = [row for row in json.loads((args.spider / "dev.json").read_text())
           if (database / row["db_id"] / f"{row['db_id']}.sqlite").is_file()]
    rng = random.Random(args.seed)
    by_db = collections.defaultdict(list)
    for row in dev:
        by_db[row["db_id"]].append(row["query"])
    pairs = [(row, kind, prediction) for row in dev
             for kind, prediction in variants(row["query"], by_db[row["db_id"]], rng).items()]
    references = [{"question": row["question"], "query": row["query"], "db_id": row["db_id"]} for row, _, _ in pairs]
    predictions = [prediction for _, _, prediction in pairs]

    task = get_task("spider")
    knowledge = task.load_knowledge({"db_dir": str(database)})
    try:
        knowledge.prepare({"db_id": row["db_id"]} for row in references)
        start = time.perf_counter()
        ours = task.evaluate(references, predictions, knowledge)
        ours_s = time.perf_counter() - start
    finally:
        knowledge.cleanup()

    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "database"
        for db_id in sorted(by_db):
            shutil.copytree(database / db_id, copy / db_id)
        start = time.perf_counter()
        official = []
        for reference, prediction in zip(references, predictions):
            path = str(copy / reference["db_id"] / f"{reference['db_id']}.sqlite")
            official.append(bool(eval_exec_match(db=path, p_str=prediction.replace(" value ", " 1 "), g_str=reference["query"],
                                                 plug_value=False, keep_distinct=False,
                                                 progress_bar_for_each_datapoint=False)))
        official_s = time.perf_counter() - start

    differ = [i for i, (o, r) in enumerate(zip(official, ours.per_row)) if o != r["correct"]]
    kinds = collections.Counter(kind for _, kind, _ in pairs)
    print(f"{len(pairs)} predictions on {len(dev)} Spider dev questions ({len(by_db)} databases)")
    print(f"{'kind':<16} {'count':>6} {'official EX':>12} {'symgen EX':>10} {'differ':>7}")
    for kind in kinds:
        index = [i for i, (_, k, _) in enumerate(pairs) if k == kind]
        print(f"{kind:<16} {len(index):>6} {sum(official[i] for i in index) / len(index):>12.4f} "
              f"{sum(ours.per_row[i]['correct'] for i in index) / len(index):>10.4f} "
              f"{sum(1 for i in index if i in set(differ)):>7}")
    print(f"execution accuracy: official {sum(official) / len(official):.4f}, symgen {ours.metrics['execution_accuracy']:.4f}")
    print(f"decisions that differ: {len(differ)} of {len(pairs)}")
    print(f"time: official {official_s:.1f} s, symgen {ours_s:.1f} s ({official_s / ours_s:.1f}x)")
    for i in differ[:10]:
        print(f"  differs: {references[i]['query']!r} vs {predictions[i]!r}: official {official[i]}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
