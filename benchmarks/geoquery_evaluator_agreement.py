"""GeoQuery: does `symgen evaluate --task geoquery` agree row by row with SymGen's evaluator?

SymGen's released evaluator (``src/metrics/geoquery/geoquery.pl`` and ``geobase.pl`` of
HKUNLP/SymGen, run under SWI-Prolog as its ``prolog_eval.check_denotaion_same`` does: both
queries executed with ``execute_query``; an error means "not the same") is kept outside this
project: pass the folder that holds those two files with ``--reference-dir``.

Predictions: for each of the 280 real dev questions, the gold query and five variants of it,
built here: variables renamed (same answer, other text), a constant swapped (another state or
city), a superlative flipped (largest <-> smallest, highest <-> lowest, longest <-> shortest,
most <-> fewest), a conjunct dropped, and broken syntax (the last two characters cut). Each is
judged by this project (``Task.evaluate``, in worker processes) and by the reference (one
sequential SWI-Prolog process); printed: rows judged alike, per variant, and every row judged
differently (a query over its time limit in one engine only is counted apart).

Usage: python benchmarks/geoquery_evaluator_agreement.py --reference-dir DIR [--timeout 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from symgen_datasets.tasks import get_task  # noqa: E402
from tests.llm_servers import drop_conjunct, flip_superlative, rename_variables, swap_constant  # noqa: E402

#: Runs SymGen's execute_query on "gold<TAB>prediction" lines; prints same / different / error.
REFERENCE_RUNNER = r"""
:- use_module(library(time)).
:- initialization(main, main).
main :- current_prolog_flag(argv, [Dir, Limit|_]), working_directory(_, Dir), style_check(-singleton),
    consult(geobase), consult(geoquery), atom_number(Limit, T), loop(T).
loop(T) :- read_line_to_string(user_input, L), ( L == end_of_file -> true ; one(L, T), loop(T) ).
one(L, T) :- split_string(L, "\t", "", [G, P]),
    catch(( term_string(QG, G), term_string(QP, P),
            call_with_time_limit(T, (execute_query(QG, AG), execute_query(QP, AP))),
            ( AG == AP -> R = same ; R = different ) ), E, (E == time_limit_exceeded -> R = timeout ; R = error)),
    !, format("~w~n", [R]), flush_output.
one(_, _) :- format("error~n"), flush_output.
"""

VARIANTS = {"gold": lambda q: q, "variables renamed": rename_variables, "constant swapped": swap_constant,
            "superlative flipped": flip_superlative, "conjunct dropped": drop_conjunct,
            "broken syntax": lambda q: q[:-2]}


def reference_judgements(reference_dir: Path, pairs: list[tuple[str, str]], timeout_s: float) -> list[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".pl", delete=False) as handle:
        handle.write(REFERENCE_RUNNER)
    lines = "".join(f"{gold}\t{prediction}\n" for gold, prediction in pairs)
    done = subprocess.run(["swipl", "-q", handle.name, "--", str(reference_dir), f"{timeout_s:g}"], input=lines,
                          capture_output=True, text=True)
    Path(handle.name).unlink()
    results = done.stdout.split()
    if len(results) != len(pairs):
        raise SystemExit(f"the reference evaluator answered {len(results)} of {len(pairs)} rows: {done.stderr[-2000:]}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", required=True, type=Path,
                        help="a folder with SymGen's geoquery.pl and geobase.pl")
    parser.add_argument("--timeout", type=float, default=10.0, help="per query, both engines (seconds)")
    args = parser.parse_args()
    task = get_task("geoquery")
    dev = [json.loads(line) for line in task.references_path().read_text().splitlines()]
    rows, predictions, kinds = [], [], []
    for row in dev:
        for kind, make in VARIANTS.items():
            rows.append(row)
            predictions.append(make(row["prolog"]))
            kinds.append(kind)
    knowledge = task.load_knowledge(task.options_with_defaults({}))
    mine = task.evaluate(rows, predictions, knowledge, timeout_s=args.timeout).per_row
    theirs = reference_judgements(args.reference_dir, [(r["prolog"], p) for r, p in zip(rows, predictions)],
                                  args.timeout)
    alike, total, timeouts, differ = Counter(), Counter(), 0, []
    for row, prediction, kind, judged, reference in zip(rows, predictions, kinds, mine, theirs):
        total[kind] += 1
        if judged["correct"] == (reference == "same"):
            alike[kind] += 1
        elif reference == "timeout" or "time limit" in str(judged.get("error", "")):
            timeouts += 1
        else:
            differ.append((kind, row["prolog"], prediction, judged, reference))
    print(f"{'predictions':<22} {'rows':>5} {'judged alike':>13}")
    for kind in VARIANTS:
        print(f"{kind:<22} {total[kind]:>5} {alike[kind]:>13}")
    print(f"{'all':<22} {sum(total.values()):>5} {sum(alike.values()):>13}   (over a time limit in one engine only: "
          f"{timeouts}; judged differently: {len(differ)})")
    for kind, gold, prediction, judged, reference in differ:
        print(f"  {kind}: gold {gold}\n    prediction {prediction}\n    symgen-datasets {judged}, reference {reference}")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
