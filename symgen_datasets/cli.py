"""The ``symgen`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .errors import EXIT_DIFFERENCES, EXIT_INTERRUPTED, BudgetExhausted, SymgenError
from .generators import REQUEST_TIMEOUT_S, SPEC_HELP
from .io import MAX_INPUT_CHARS


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
    _db_dir_option(gen)
    gen.add_argument("--questions", metavar="FILE", help="JSONL (or JSON array) with question and db_id: skip question generation")
    gen.add_argument("--num-questions", metavar="N", type=int, help="questions to generate (default: 20)")
    gen.add_argument("--num-samples", metavar="K", type=int, default=20, help="candidates per question (default: 20)")
    gen.add_argument("--min-votes", metavar="V", type=int, default=5, help="votes needed to keep a question (default: 5)")
    gen.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    gen.add_argument("--seed", type=int, default=0, help="run seed; request seeds derive from it (default: 0)")
    gen.add_argument("--concurrency", type=int, default=16, help="LLM requests in flight at most (default: 16)")
    gen.add_argument("--generator", metavar="SPEC", default="embedded", help=f"{SPEC_HELP} (default: embedded)")
    gen.add_argument("--timeout", dest="timeout_s", type=float, default=5.0, help="per-query execution time limit in seconds (default: 5)")
    gen.add_argument("--max-retries", type=int, default=6, help="attempts per LLM request on 429/5xx/connection errors and timeouts (default: 6)")
    gen.add_argument("--request-timeout", dest="request_timeout_s", metavar="S", type=float, default=REQUEST_TIMEOUT_S,
                     help=f"time limit of one attempt of an LLM request in seconds (default: {REQUEST_TIMEOUT_S:g})")
    gen.add_argument("--max-input-chars", metavar="N", type=int, default=MAX_INPUT_CHARS,
                     help=f"longest question or program accepted in --demos and --questions, in characters (default: {MAX_INPUT_CHARS})")
    gen.add_argument("--output", metavar="DIR", help="dataset folder to write (default: ./<task>-synth)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output folder")
    gen.add_argument("--work-dir", metavar="DIR", help="the run's work folder (response cache; default: .<output>.work beside --output)")
    gen.add_argument("--max-requests", metavar="N", type=int, help="request at most N completions from the LLM, then stop cleanly; the same command resumes")
    gen.add_argument("--no-cache", dest="cache", action="store_false", help="do not store responses (no resume)")
    gen.add_argument("--dry-run", action="store_true", help="print the number of requests and an estimate of tokens, send nothing")
    gen.add_argument("--push-to-hub", metavar="REPO_ID", help="then push the folder to this Hub dataset repository (see `symgen push`)")
    gen.add_argument("--version", metavar="X.Y.Z", help="with --push-to-hub: the version to tag (default: 1.0.0, or the latest with its minor bumped)")
    _hub_options(gen)

    push = commands.add_parser(
        "push",
        help="publish a dataset folder as a tagged version",
        description="Upload a dataset folder to a Hub dataset repository in one commit and tag it vX.Y.Z. "
        "Existing tags are never moved. The token comes from the standard Hugging Face configuration.",
    )
    push.add_argument("folder", help="a folder written by `symgen generate`")
    push.add_argument("repo_id", help="namespace/name of the dataset repository (created if needed)")
    push.add_argument("--version", required=True, metavar="X.Y.Z", help="the version; tagged vX.Y.Z")
    _hub_options(push)

    versions = commands.add_parser("versions", help="list a repository's versions with their card summaries")
    versions.add_argument("repo_id")

    check = commands.add_parser(
        "verify",
        help="recompute a dataset's kept rows from its candidates (no LLM)",
        description="Re-execute every published candidate, compare its outcome with the stored one, redo the "
        "majority vote and compare the kept set with the published rows. Exit status 1 when they differ, 2 when "
        "the source cannot be read.",
    )
    check.add_argument("source", help="a dataset folder, or REPO_ID[@REVISION] on the Hub")
    _db_dir_option(check)
    return parser


def _db_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db-dir", metavar="DIR", help="folder of <db_id>/<db_id>.sqlite; default: the task's packaged databases")


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created from main if needed)")
    parser.add_argument("--commit-message", metavar="MSG", help="default: 'symgen: vX.Y.Z'")


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import GenerateSettings, format_summary, generate

    hub_options = ("push_to_hub", "version", "private", "revision", "commit_message", "dry_run")
    options = {k: v for k, v in vars(args).items() if k != "command" and k not in hub_options}
    if args.version and not args.push_to_hub:
        from .errors import InputError

        raise InputError("--version is used with --push-to-hub (or later with `symgen push DIR REPO_ID --version X.Y.Z`)")
    if args.version:
        from .hub.push import parse_version

        parse_version(args.version)  # a bad version fails before any work
    if args.dry_run:
        from .pipeline.run import dry_run

        print(dry_run(GenerateSettings(**options)))
        return 0
    result = generate(GenerateSettings(**options))
    if result is None:  # a process other than the main one of `accelerate launch`: its shard is merged there
        return 0
    print(format_summary(result))
    if args.push_to_hub:
        from .hub import next_version, push
        from huggingface_hub import HfApi

        version = args.version or next_version(HfApi(), args.push_to_hub)
        _print_push(push(result.output, args.push_to_hub, version, private=args.private,
                         revision=args.revision, commit_message=args.commit_message))
    return 0


def _print_push(result) -> None:
    parent = f" (parent {result.parent_tag})" if result.parent_tag else ""
    print(f"pushed {result.repo_id} {result.tag}{parent}: commit {result.commit}")
    print(f'load it with: datasets.load_dataset("{result.repo_id}", revision="{result.tag}")')


def _push(args: argparse.Namespace) -> int:
    from .hub import push

    _print_push(push(args.folder, args.repo_id, args.version, private=args.private,
                     revision=args.revision, commit_message=args.commit_message))
    return 0


def _versions(args: argparse.Namespace) -> int:
    from .hub import list_versions

    versions = list_versions(args.repo_id)
    if not versions:
        print(f"{args.repo_id}: no version tags (vX.Y.Z) yet")
        return 0
    header = ("version", "commit", "parent", "task", "questions", "kept", "generator")
    table = [header] + [
        (v.tag, v.commit[:12], v.parent or "-", v.task, str(v.questions if v.questions is not None else "?"),
         str(v.kept if v.kept is not None else "?"), v.generator)
        for v in versions
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .hub import reverify

    report = reverify(args.source, db_dir=args.db_dir)
    for line in report.differences:
        print(line)
    print(f"re-executed the {report.candidates_checked} published candidates and compared their stored outcomes")
    verdict = "identical" if report.identical else f"{len(report.differences)} differences"
    print(f"{report.source}: published {report.published} rows, re-verification keeps {report.recomputed}: {verdict}")
    return 0 if report.identical else EXIT_DIFFERENCES


class _ProgressFriendlyHandler(logging.Handler):
    """Writes log records to the current ``sys.stderr`` through ``tqdm.write``, so that notices
    (retries, warnings) appear between progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


def _show_notices() -> None:
    """Show the library's warnings (``symgen_datasets`` loggers) on stderr, once per process."""
    logger = logging.getLogger("symgen_datasets")
    if not any(isinstance(handler, _ProgressFriendlyHandler) for handler in logger.handlers):
        handler = _ProgressFriendlyHandler()
        handler.setFormatter(logging.Formatter("symgen: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``symgen``; returns the exit status: 0 done, 1 differences found by
    ``verify``, 2 bad input / a failed request / a busy folder or database, 3 stopped at
    ``--max-requests`` (resumable), 130 interrupted (see :mod:`symgen_datasets.errors`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    _show_notices()
    args = _parser().parse_args(argv)
    try:
        return {"generate": _generate, "push": _push, "versions": _versions, "verify": _verify}[args.command](args)
    except BudgetExhausted as stop:  # a clean, resumable stop, not a failure
        print(f"symgen {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except SymgenError as error:
        print(f"symgen {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"symgen {args.command}: interrupted; nothing was written (the same command resumes)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
