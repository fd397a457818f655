"""The statement guard of server engines: the first layer between generated SQL and a database.

A candidate passes only when sqlglot parses it, in the engine's dialect, as **exactly one**
``SELECT`` query (``WITH``, ``UNION``/``INTERSECT``/``EXCEPT`` and sub-queries included) that

* holds no statement that writes or changes anything anywhere in its tree (``INSERT``/
  ``UPDATE``/``DELETE``/``MERGE`` inside a ``WITH``, ``SELECT ... INTO``, DDL, ``COPY``, ``SET``,
  commands sqlglot cannot classify);
* reads only the database's own tables (and its own ``WITH`` names): no system catalog, no
  other schema, no file or table function;
* calls only functions of :data:`ALLOWED_FUNCTIONS` (aggregates, arithmetic, text and date
  functions): no ``pg_read_file``, ``pg_sleep``, ``lo_import``, ``dblink``, ``set_config``,
  ``read_csv``, ``generate_series``, user-defined functions...

The guard is one layer: each engine adds its own (a read-only transaction, a statement time
limit, a role without privileges, DuckDB's ``enable_external_access = false``), any of which
stops a write on its own.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Iterable

from . import QueryError

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to parsing as a Command": refused anyway

#: Functions a query may call (upper case): SQL's aggregates and the arithmetic, text, date and
#: conditional functions text-to-SQL data uses, in the spellings sqlglot gives them.
ALLOWED_FUNCTIONS = frozenset("""
COUNT SUM AVG MIN MAX ABS ROUND CEIL CEILING FLOOR SIGN POWER POW SQRT EXP LN LOG LOG10 MOD
LOWER UPPER LENGTH CHAR_LENGTH CHARACTER_LENGTH SUBSTRING SUBSTR TRIM LTRIM RTRIM REPLACE CONCAT
CONCAT_WS LEFT RIGHT STRPOS POSITION INSTR REVERSE LPAD RPAD INITCAP SPLIT_PART
COALESCE NULLIF IFNULL NVL GREATEST LEAST CASE IF IIF CAST TRY_CAST SAFE_CAST
EXTRACT DATE_PART DATE_TRUNC STRFTIME STR_TO_TIME STR_TO_DATE TO_CHAR TO_DATE TO_TIMESTAMP
TIME_TO_STR TIME_STR_TO_TIME TS_OR_DS_TO_DATE DATE DATETIME TIMESTAMP YEAR MONTH DAY
CURRENT_DATE CURRENT_TIMESTAMP CURRENT_TIME DATE_ADD DATE_SUB DATE_DIFF DATEDIFF AGE INTERVAL
STDDEV STDDEV_POP STDDEV_SAMP VARIANCE VAR_POP VAR_SAMP COUNT_IF BOOL_AND BOOL_OR EVERY
STRING_AGG GROUP_CONCAT ARRAY_AGG LIST MEDIAN QUANTILE PERCENTILE_CONT PERCENTILE_DISC MODE
ROW_NUMBER RANK DENSE_RANK NTILE LAG LEAD FIRST_VALUE LAST_VALUE PERCENT_RANK CUME_DIST
ANY_VALUE ARBITRARY DIV INT_DIV SAFE_DIVIDE TYPEOF
""".split())


def _function_name(node) -> str:
    from sqlglot import exp

    if isinstance(node, exp.Anonymous):
        return str(node.name).upper()
    return node.sql_name().upper()


def check_query(query: str, dialect: str, tables: Iterable[str]) -> None:
    """Admit ``query`` or refuse it (see the module docstring for the rule). Verdicts are
    cached per process (LLMs repeat queries across questions; the text decides the verdict).

    Args:
        query: one candidate.
        dialect: sqlglot's dialect name (``postgres``, ``duckdb``).
        tables: the database's table names; comparison is case-insensitive.

    Raises:
        QueryError: the query is refused; the message names the reason.
    """
    refusal = _verdict(query, dialect, frozenset(name.lower() for name in tables))
    if refusal is not None:
        raise QueryError(refusal)


@lru_cache(maxsize=4096)
def _verdict(query: str, dialect: str, tables: frozenset[str]) -> str | None:
    """The reason ``query`` is refused, or ``None`` when it is admitted."""
    import sqlglot
    from sqlglot import exp

    try:
        statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as error:
        return f"refused: not a query sqlglot can parse as {dialect} ({str(error).splitlines()[0]})"
    if len(statements) != 1:
        return f"refused: {len(statements)} statements; exactly one SELECT query is allowed"
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        return f"refused: a {tree.key.upper()} statement; only a SELECT query is allowed"
    cte_names = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            return f"refused: {node.key.upper()} inside the query; only reads are allowed"
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                return ("refused: reads from something that is not a table of the database "
                        f"({node.sql(dialect=dialect)[:60]})")
            if node.args.get("catalog") is not None or (
                    node.args.get("db") is not None and node.db.lower() not in ("public", "main")):
                return f"refused: table {node.sql(dialect=dialect)} is outside the database's own tables"
            name = node.name.lower()
            if name not in tables and name not in cte_names:
                return f"refused: no table {node.name!r} in the database"
        elif isinstance(node, exp.Func) and not isinstance(node, _OPERATORS):
            name = _function_name(node)
            if name not in ALLOWED_FUNCTIONS:
                return f"refused: function {name.lower()}() is not on the allow-list"
    return None


def _classes():
    from sqlglot import exp

    forbidden = (exp.DML, exp.DDL, exp.Command, exp.Into, exp.Set, exp.Copy, exp.Use, exp.Pragma,
                 exp.Transaction, exp.Commit, exp.Rollback, exp.LoadData, exp.Lock)
    # sqlglot models some operators (AND, OR...) as functions: they are no calls
    operators = (exp.Binary, exp.Unary, exp.Connector, exp.Paren)
    return forbidden, operators


_FORBIDDEN, _OPERATORS = _classes()
