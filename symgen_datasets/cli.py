"""The ``symgen`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import SymgenError
from .generators import SPEC_HELP


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="symgen", description="Verified synthetic datasets for symbolic languages.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate",
        help="generate a verified dataset (SymGen)",
        description="Generate questions and candidate programs with an LLM, keep the questions whose "
        "candidates agree on their execution result, and write a Hub-style dataset folder.",
    )
    gen.add_argument("task", help="task name: spider | geoquery_sql")
    gen.add_argument("--demos", metavar="FILE", help="JSONL demonstrations (question, query, db_id); default: the task's packaged 10-shot demos")
    gen.add_argument("--db-dir", metavar="DIR", help="folder of <db_id>/<db_id>.sqlite; default: the task's packaged databases")
    gen.add_argument("--questions", metavar="FILE", help="JSONL (or JSON array) with question and db_id: skip question generation")
    gen.add_argument("--num-questions", metavar="N", type=int, help="questions to generate (default: 20)")
    gen.add_argument("--num-samples", metavar="K", type=int, default=20, help="candidates per question (default: 20)")
    gen.add_argument("--min-votes", metavar="V", type=int, default=5, help="votes needed to keep a question (default: 5)")
    gen.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    gen.add_argument("--seed", type=int, default=0, help="run seed; request seeds derive from it (default: 0)")
    gen.add_argument("--concurrency", type=int, default=16, help="LLM requests in flight at most (default: 16)")
    gen.add_argument("--generator", metavar="SPEC", default="embedded", help=f"{SPEC_HELP} (default: embedded)")
    gen.add_argument("--timeout", dest="timeout_s", type=float, default=5.0, help="per-query execution time limit in seconds (default: 5)")
    gen.add_argument("--max-retries", type=int, default=6, help="attempts per LLM request on 429/5xx/connection errors (default: 6)")
    gen.add_argument("--output", metavar="DIR", help="dataset folder to write (default: ./<task>-synth)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output folder")
    return parser


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import GenerateSettings, format_summary, generate

    options = {k: v for k, v in vars(args).items() if k != "command"}
    result = generate(GenerateSettings(**options))
    print(format_summary(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``symgen``; returns the exit status (2 for bad input or a failed backend)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    args = _parser().parse_args(argv)
    try:
        return {"generate": _generate}[args.command](args)
    except SymgenError as error:
        print(f"symgen {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"symgen {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
