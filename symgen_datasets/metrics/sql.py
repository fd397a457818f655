"""Text-to-SQL metrics: execution accuracy with the official Spider test-suite evaluator's
semantics, exact match after normalisation, the valid-SQL rate, and Spider's hardness levels.

Execution accuracy follows ``exec_eval.py`` of the official evaluator (taoyds/test-suite-sql-eval),
with its default options, on one database per ``db_id``:

* both queries get its post-processing (``> =`` -> ``>=`` and the like; ``YEAR(CURDATE())`` ->
  ``2020``) and DISTINCT removed (its default; ``keep_distinct=True`` keeps it), and the prediction
  its ``" value "`` -> ``" 1 "`` rewrite (from ``evaluation.py``); values are not plugged in from
  the gold query (its default: no ``--plug_value``);
* a prediction that fails to execute (or runs past the time limit; the official one is 60 s) is
  wrong;
* two results match when both are empty, or when they have as many rows and columns and some
  permutation of the prediction's columns makes the rows equal: as sequences when the gold query
  contains "order by" anywhere (``'order by' in gold.lower()``), as bags otherwise; values compare
  with Python's ``==`` (floats exactly, ``1 == 1.0``); TEXT is decoded dropping invalid UTF-8;
* its quick rejection comes first: the rows, each with its values sorted by ``str(value) +
  str(type(value))``, must be equal as a list (order matters) or as a set; this step makes the
  official evaluator reject a few pairs that differ only by int against float in rows of
  several values, and it is kept so that the decisions are the same.

The column-permutation search is exhaustive (pruned by each column's bag of values, a condition
every matching permutation meets), so it decides the same as the official search, which prunes
by sampled rows.

Hardness follows ``Evaluator.eval_hardness`` of Spider's ``evaluation.py`` on the gold query, its
counts taken on a sqlglot parse: on the 1,034 Spider dev questions it gives the published split
(easy 248, medium 446, hard 174, extra 166).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import InputError
from ..verifiers import ExecutionResult
from ..verifiers.pool import Chunk, WorkerPool
from ..verifiers.engines import QueryError, QueryTimeout, engine_class
from ..verifiers.sqlite import connect_readonly
from . import Evaluation, share

#: The official evaluator's per-query time limit (seconds).
OFFICIAL_TIMEOUT_S = 60.0
#: Rows fetched per query at most when comparing (the official evaluator fetches all).
MAX_ROWS = 1_000_000

HARDNESS_LEVELS = ("easy", "medium", "hard", "extra")


_CURRENT_YEAR = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.I)


def postprocess(query: str) -> str:
    """The official post-processing of a query: ``> =``, ``< =``, ``! =`` joined (``exec_eval.
    postprocess``) and ``YEAR(CURDATE())`` read as 2020 (``replace_cur_year``)."""
    query = query.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    return _CURRENT_YEAR.sub("2020", query)


def remove_distinct(query: str) -> str:
    """``query`` without its DISTINCT keywords (sqlparse tokens whose text is ``distinct``, in
    any case), as the official evaluator does by default."""
    import sqlparse

    statements = sqlparse.parse(query)
    if not statements:
        return query
    return "".join(token.value for token in statements[0].flatten() if token.value.lower() != "distinct")


def prepare(gold: str, prediction: str, keep_distinct: bool = False) -> tuple[str, str, bool]:
    """The queries as the official evaluator executes them, and whether row order matters.

    Returns:
        ``(gold, prediction, order_matters)``.
    """
    prediction = prediction.replace(" value ", " 1 ")
    gold, prediction = postprocess(gold), postprocess(prediction)
    if not keep_distinct:
        gold = remove_distinct(gold)
        try:
            prediction = remove_distinct(prediction)
        except Exception:  # noqa: BLE001 - sqlparse cannot tokenise it: execute it as it is
            pass
    return gold, prediction, "order by" in gold.lower()


def _unordered(row: tuple) -> tuple:
    """A row's values in the official evaluator's order for its quick rejection."""
    return tuple(sorted(row, key=lambda value: str(value) + str(type(value))))


def results_match(gold: Sequence[tuple], predicted: Sequence[tuple], order_matters: bool) -> bool:
    """Whether two execution results are equal up to a permutation of the predicted columns
    (the official evaluator's ``result_eq``): both empty, or the same number of rows and columns
    and a column permutation making the rows equal (as a sequence if ``order_matters``, else as
    a bag)."""
    if not gold and not predicted:
        return True
    if len(gold) != len(predicted):
        return False
    width = len(gold[0])
    if any(len(row) != width for row in predicted) or any(len(row) != width for row in gold):
        return False
    gold_unordered = [_unordered(row) for row in gold]
    predicted_unordered = [_unordered(row) for row in predicted]
    if gold_unordered != predicted_unordered if order_matters else set(gold_unordered) != set(predicted_unordered):
        return False
    gold_columns = [[row[i] for row in gold] for i in range(width)]
    predicted_columns = [[row[i] for row in predicted] for i in range(width)]
    same = (lambda a, b: a == b) if order_matters else (lambda a, b: Counter(a) == Counter(b))
    options = [[j for j in range(width) if same(gold_columns[i], predicted_columns[j])] for i in range(width)]
    target = list(map(tuple, gold)) if order_matters else Counter(map(tuple, gold))

    def search(column: int, used: tuple[int, ...]) -> bool:
        if column == width:
            rows = [tuple(row[j] for j in used) for row in predicted]
            return (rows if order_matters else Counter(rows)) == target
        return any(search(column + 1, used + (j,)) for j in options[column] if j not in used)

    return search(0, ())


def _fetch_all(connection: sqlite3.Connection, query: str, timeout_s: float) -> list[tuple]:
    deadline = time.monotonic() + timeout_s
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
    try:
        cursor = connection.execute(query)
        try:
            return cursor.fetchmany(MAX_ROWS)
        finally:
            cursor.close()
    finally:
        connection.set_progress_handler(None, 0)


_CONNECTIONS: dict[str, sqlite3.Connection] = {}


def _sqlite_fetcher(db_path: str, timeout_s: float) -> Callable[[str], list[tuple]]:
    """``fetch(query)`` on the worker's connection to a SQLite file (TEXT decoded dropping
    invalid UTF-8, as the official evaluator does), raising the engines' ``QueryTimeout`` /
    ``QueryError``."""
    connection = _CONNECTIONS.get(db_path)
    if connection is None:
        connection = _CONNECTIONS[db_path] = connect_readonly(db_path)
        connection.text_factory = lambda raw: raw.decode("utf-8", errors="ignore")

    def fetch(query: str) -> list[tuple]:
        try:
            return _fetch_all(connection, query, timeout_s)
        except sqlite3.OperationalError as error:
            raise (QueryTimeout if "interrupted" in str(error) else QueryError)(str(error)) from None
        except (sqlite3.Error, ValueError, OverflowError, MemoryError) as error:
            raise QueryError(f"{type(error).__name__}: {error}") from None

    return fetch


def _engine_fetcher(target: Any, timeout_s: float) -> Callable[[str], list[tuple]]:
    """``fetch(query)`` on the worker's connection to an engine's ``Target`` (PostgreSQL,
    DuckDB: rows normalised by the engine).

    Raises:
        QueryError: the database cannot be opened.
    """
    from ..verifiers.sqlite import _worker_connection

    engine = engine_class(target.family)
    connection = _worker_connection(target)
    return lambda query: engine.fetch(connection, query, timeout_s, MAX_ROWS - 1)


def _judge_chunk(groups: Chunk, options: tuple[float, bool]) -> list[ExecutionResult]:
    """Worker side: each program is ``gold + "\\x1f" + prediction``, on a SQLite file or an
    engine's ``Target``; the outcome is ``ok`` with key ``"1"`` (match) or ``"0"``, an error when
    the prediction does not execute, ``crash`` when the gold query does not."""
    timeout_s, keep_distinct = options
    results = []
    for context, pairs in groups:
        try:
            fetch = _sqlite_fetcher(context, timeout_s) if isinstance(context, str) else _engine_fetcher(context, timeout_s)
        except QueryError as error:
            results.extend(ExecutionResult("crash", error=f"the gold query fails: {error}") for _ in pairs)
            continue
        for pair in pairs:
            gold, prediction, order_matters = prepare(*pair.split("\x1f", 1), keep_distinct=keep_distinct)
            try:
                gold_rows = fetch(gold)
            except QueryError as error:
                results.append(ExecutionResult("crash", error=f"the gold query fails: {error}"))
                continue
            try:
                predicted_rows = fetch(prediction)
            except QueryTimeout as error:
                results.append(ExecutionResult("timeout", error=str(error)))
                continue
            except QueryError as error:
                results.append(ExecutionResult("error", error=str(error)))
                continue
            results.append(ExecutionResult("ok", key="1" if results_match(gold_rows, predicted_rows, order_matters) else "0"))
    return results


def execution_matches(jobs: Iterable[tuple[str, str, str]], timeout_s: float = OFFICIAL_TIMEOUT_S,
                      keep_distinct: bool = False, max_workers: int | None = None) -> Iterator[ExecutionResult]:
    """Compare predictions with gold queries by execution, in sandboxed worker processes
    (read-only, time-limited connections).

    Args:
        jobs: ``(db_path, gold, prediction)`` triples (a database snapshot the run owns).
        timeout_s: per-query limit (the official evaluator's is 60 s).
        keep_distinct: keep DISTINCT (the official ``--keep_distinct``).

    Yields:
        Per job: ``ok`` with key ``"1"`` (same result) or ``"0"``; ``error``/``timeout`` when the
        prediction does not execute; ``crash`` when the gold query does not.
    """
    with WorkerPool(_judge_chunk, (timeout_s, keep_distinct), max_workers=max_workers, timeout_s=2 * timeout_s) as pool:
        for outcomes in pool.execute_stream((db_path, [f"{gold}\x1f{prediction}"]) for db_path, gold, prediction in jobs):
            yield outcomes[0]


def _context(target: Any) -> Any:
    return str(target) if isinstance(target, (str, bytes)) or hasattr(target, "__fspath__") else target


def sql_scores(references: Sequence[dict], predictions: Sequence[str | None], db_path: Callable[[str], Any],
               timeout_s: float = OFFICIAL_TIMEOUT_S, by_hardness: bool = False, keep_distinct: bool = False,
               max_workers: int | None = None, dialect: str = "sqlite") -> Evaluation:
    """The text-to-SQL metrics of ``predictions`` against reference rows.

    Args:
        references: rows with ``query`` (gold) and ``db_id``.
        predictions: one query per row, in order; ``None`` (no query) is wrong and invalid.
        db_path: ``db_id`` -> what to execute on: a SQLite file (a snapshot the caller owns) or an
            engine's :class:`~symgen_datasets.verifiers.engines.Target`.
        timeout_s: per-query limit (seconds).
        by_hardness: add Spider's hardness of each gold query and the breakdown by level.
        keep_distinct: see :func:`execution_matches`.
        dialect: sqlglot's dialect of the queries (exact match's normal form, hardness).

    Returns:
        ``execution_accuracy`` (primary), ``exact_match`` (:func:`normal_form` equal),
        ``valid_sql`` (the prediction executes); per row ``correct``, ``exact``, ``valid``,
        ``error`` (why it did not execute) and ``hardness``; ``breakdown`` per hardness level
        (``count`` and the three metrics), in Spider's order.

    Raises:
        InputError: a gold query fails to execute (the official evaluator stops there too),
            naming its row.
    """
    from tqdm.auto import tqdm

    per_row: list[dict[str, Any]] = [{"correct": False, "exact": False, "valid": False} for _ in references]
    jobs = [(i, _context(db_path(row["db_id"])), row["query"], prediction)
            for i, (row, prediction) in enumerate(zip(references, predictions)) if prediction]
    outcomes = execution_matches(((path, gold, prediction) for _, path, gold, prediction in jobs),
                                 timeout_s=timeout_s, keep_distinct=keep_distinct, max_workers=max_workers)
    for (i, _, gold, prediction), outcome in zip(jobs, tqdm(outcomes, total=len(jobs), desc="executing", unit="query")):
        if outcome.status == "crash":
            raise InputError(f"reference row {i + 1} ({references[i]['db_id']}): {outcome.error}: {gold!r}; "
                             "fix the references or give the databases they were written for with --db-dir or --db-url")
        row = per_row[i]
        row["valid"] = outcome.ok
        row["correct"] = outcome.ok and outcome.key == "1"
        row["exact"] = normal_form(prediction, dialect) == normal_form(gold, dialect)
        if not outcome.ok:
            row["error"] = outcome.error
    for row, prediction in zip(per_row, predictions):
        if not prediction:
            row["error"] = "no prediction"

    def metrics(rows: list[dict]) -> dict[str, float]:
        return {"execution_accuracy": share([r["correct"] for r in rows]),
                "exact_match": share([r["exact"] for r in rows]),
                "valid_sql": share([r["valid"] for r in rows])}

    breakdown: dict[str, dict[str, float]] = {}
    if by_hardness:
        for row, reference in zip(per_row, references):
            row["hardness"] = hardness(reference["query"], dialect)
        for level in HARDNESS_LEVELS:
            rows = [r for r in per_row if r["hardness"] == level]
            breakdown[level] = {"count": len(rows), **metrics(rows)}
    return Evaluation(metrics(per_row), "execution_accuracy", per_row, breakdown)


def normal_form(query: str, dialect: str = "sqlite") -> str:
    """A query's form for exact match: sqlglot's rendering (keywords upper case, identifiers and
    spacing normalised, string literals kept), trailing ``;`` dropped; white space folded and
    lower case when sqlglot cannot parse it."""
    import sqlglot

    text = postprocess(query).strip().rstrip(";").strip()
    try:
        return sqlglot.transpile(text, read=dialect, write=dialect, normalize=True)[0]
    except Exception:  # noqa: BLE001 - sqlglot raises several kinds on bad SQL
        return " ".join(text.lower().split())


# --- Spider's hardness ---------------------------------------------------------------------------


def _conditions(node: Any) -> list:
    """A condition as Spider's parser lists it: condition units and the ``and``/``or`` words
    between them, left to right."""
    from sqlglot import exp

    if node is None:
        return []
    if isinstance(node, exp.Paren):
        return _conditions(node.this)
    if isinstance(node, (exp.And, exp.Or)):
        return [*_conditions(node.left), "and" if isinstance(node, exp.And) else "or", *_conditions(node.right)]
    return [node]


def hardness(query: str, dialect: str = "sqlite") -> str:
    """Spider's hardness level of a (gold) query: ``easy``, ``medium``, ``hard`` or ``extra``.

    Counts, as ``evaluation.py`` does on Spider's own parse: component 1 = WHERE, GROUP BY,
    ORDER BY, LIMIT (one each), joined tables beyond the first, ORs and LIKEs in the ON, WHERE and
    HAVING conditions; component 2 = INTERSECT/UNION/EXCEPT (the right-hand query) and
    sub-queries in conditions; others = more than one aggregation (in SELECT and ORDER BY, plus,
    as Spider's code counts them, NOT conditions in WHERE and the and/or words of HAVING), more
    than one selected column, more than one WHERE condition, more than one GROUP BY column.

    Raises:
        ValueError: sqlglot cannot parse the query.
    """
    import sqlglot
    from sqlglot import exp

    aggregates = (exp.Count, exp.Max, exp.Min, exp.Sum, exp.Avg)
    try:
        tree = sqlglot.parse_one(query, read=dialect)
    except sqlglot.errors.ParseError as error:
        raise ValueError(f"cannot parse {query[:80]!r}: {error}") from None
    component2 = 0
    while isinstance(tree, (exp.Union, exp.Intersect, exp.Except)):
        component2 = 1  # the left query is the main one; the right one counts once
        tree = tree.left
    while isinstance(tree, exp.Subquery):
        tree = tree.this
    args = tree.args
    joins = args.get("joins") or []
    on: list = []
    for join in joins:
        if join.args.get("on") is not None:
            on += (["and"] if on else []) + _conditions(join.args["on"])
    where = _conditions(args["where"].this) if args.get("where") else []
    having = _conditions(args["having"].this) if args.get("having") else []
    group = args["group"].expressions if args.get("group") else []
    order = args["order"].expressions if args.get("order") else []
    tables = (1 if args.get("from_") or args.get("from") else 0) + len(joins)
    everything = on + where + having
    units = [c for c in everything if not isinstance(c, str)]

    def negated(c) -> bool:
        return isinstance(c, exp.Not)

    def like(c) -> bool:
        return isinstance(c.this if negated(c) else c, (exp.Like, exp.ILike))

    component1 = bool(where) + bool(group) + bool(order) + (args.get("limit") is not None) + max(tables - 1, 0)
    component1 += everything.count("or") + sum(map(like, units))
    component2 += sum(1 for c in units if next(c.find_all(exp.Select), None) is not None)
    aggregations = sum(isinstance(e.this if isinstance(e, exp.Alias) else e, aggregates) for e in tree.expressions)
    aggregations += sum(1 for c in where if not isinstance(c, str) and negated(c))
    aggregations += sum(1 for g in group if isinstance(g, aggregates))
    aggregations += sum(1 for o in order if isinstance(o.this, aggregates))
    aggregations += sum(1 for c in having if isinstance(c, str) or negated(c))
    others = (aggregations > 1) + (len(tree.expressions) > 1) + (len(where) > 1) + (len(group) > 1)
    if component1 <= 1 and others == 0 and component2 == 0:
        return "easy"
    if (others <= 2 and component1 <= 1 and component2 == 0) or (component1 <= 2 and others < 2 and component2 == 0):
        return "medium"
    if ((others > 2 and component1 <= 2 and component2 == 0) or (2 < component1 <= 3 and others <= 2 and component2 == 0)
            or (component1 <= 1 and others == 0 and component2 <= 1)):
        return "hard"
    return "extra"
