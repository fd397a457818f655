"""The ``symgen`` command line.

The flags of ``symgen generate`` come from :class:`~symgen_datasets.pipeline.settings.GenerateSettings`;
a task's own options (text-to-SQL's ``--db-dir``) come from the task, so the command line is
parsed twice: once to find the task, then with its options.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import EXIT_DIFFERENCES, EXIT_INTERRUPTED, BudgetExhausted, InputError, SymgenError
from .generators import SPEC_HELP
from .tasks.base import parse_task_flags


def _parser(task=None) -> argparse.ArgumentParser:
    """The parser; with ``task``, ``generate`` and ``check`` also take that task's options."""
    from .pipeline.settings import GenerateSettings, add_setting_arguments

    parser = argparse.ArgumentParser(prog="symgen", description="Verified synthetic datasets for symbolic languages.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser(
        "generate",
        help="generate a verified dataset (SymGen)",
        description="Generate questions and candidate programs with an LLM, keep the questions whose candidates agree "
        "(the task's verifier), and write a Hub-style dataset folder. `symgen generate TASK --help` shows the task's "
        "own options too.",
    )
    gen.add_argument("task", help="task name (see `symgen tasks`)")
    add_setting_arguments(gen, SPEC_HELP)
    gen.add_argument("--dry-run", action="store_true", help="print the number of requests and an estimate of tokens, send nothing")
    gen.add_argument("--push-to-hub", metavar="REPO_ID", help="then push the folder to this Hub dataset repository (see `symgen push`)")
    gen.add_argument("--version", metavar="X.Y.Z", help="with --push-to-hub: the version to tag (default: 1.0.0, or the latest with its minor bumped)")
    _hub_options(gen)
    _task_options(gen, task)

    calibrate = commands.add_parser(
        "calibrate",
        help="measure yield and precision of kept rows for every --min-votes, on labelled questions",
        description="Answer labelled questions (the task's real dev rows, with gold programs) through the generation "
        "pipeline with K candidates each, score each question's winning program against its gold with the task's "
        "metric, and print, for every V from 1 to K, the share of questions kept and the share of kept rows that "
        "are correct; writes calibration.json, calibration.md, calibration.png and questions.jsonl. Pick V for your LLM before a "
        "big run. Responses are cached in the output folder: running again with other verifier options is free.",
    )
    calibrate.add_argument("task", help="task name (see `symgen tasks`)")
    add_setting_arguments(calibrate, SPEC_HELP, exclude=CALIBRATE_EXCLUDED)
    calibrate.add_argument("--output-dir", metavar="DIR", help="where the calibration goes "
                           "(default: ./symgen-calibrations/<task>)")
    calibrate.add_argument("--json", action="store_true", help="print the table as one JSON object on the last line")
    _task_options(calibrate, task)

    s3 = commands.add_parser(
        "s3",
        help="S3: train a small model, extrapolate its validation errors with the LLM, repeat",
        description="S3 (Wang et al., 2023): round 0 synthesises a seed set (SymGen generation; label-conditioned "
        "generation for classification); each round trains the task model on all data so far, evaluates it on the "
        "real --validation rows and a held-out test set, and the next round asks the LLM for new examples like its "
        "validation errors (verified where the task has a verifier, deduplicated, never a validation row). Every "
        "round is a dataset version. Flags of `symgen train` (--max-steps, --learning-rate, ...) go last and pass "
        "through to training.",
    )
    s3.add_argument("task", help="task name (see `symgen tasks`)")
    s3.add_argument("--validation", required=True, metavar="FILE", help="the small real validation set whose "
                    "errors are extrapolated (the task's fields with gold answers); never used for training")
    s3.add_argument("--test", metavar="FILE", help="held-out real rows for the test accuracy (default: the task's "
                    "packaged dev set, minus any validation rows)")
    s3.add_argument("--rounds", type=int, default=2, help="error-extrapolation rounds after the seed round "
                    "(default: %(default)s)")
    s3.add_argument("--patience", type=int, metavar="N", help="stop when validation accuracy has not improved for N rounds")
    s3.add_argument("--test-every", type=int, default=0, metavar="N", help="predict the held-out test set every N rounds "
                    "(default 0: on the last round only; the costliest evaluation)")
    s3.add_argument("--model", default="embedded", help="the task model's base model (default: embedded: SmolLM2-135M, "
                    "or all-MiniLM-L6-v2 for classification)")
    s3.add_argument("--output-dir", metavar="DIR", help="the run's folder (default: ./<task>-s3)")
    s3.add_argument("--errors-per-prompt", type=int, default=3, help="errors shown in one extrapolation prompt "
                    "(default: %(default)s)")
    s3.add_argument("--examples-per-error", type=int, default=2, help="new examples asked per error "
                    "(default: %(default)s)")
    s3.add_argument("--max-errors", type=int, default=100, help="errors extrapolated per round at most "
                    "(default: %(default)s)")
    s3.add_argument("--push-to-hub", metavar="REPO_ID", help="push every round to this dataset repository")
    s3.add_argument("--version", default="1.0.0", metavar="X.Y.Z", help="the seed round's version; round N gets "
                    "the minor number raised by N (default: %(default)s)")
    s3.add_argument("--private", action="store_true", help="create the repository private")
    s3.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last "
                    "finished round")
    add_setting_arguments(s3, SPEC_HELP, exclude=S3_EXCLUDED)
    _task_options(s3, task)

    check = commands.add_parser(
        "check",
        help="validate answers with a task's verifier (no LLM)",
        description="Run each row's answer through the task's verifier as a single candidate. Prints counts by "
        "outcome and, last, `valid N of M`.",
    )
    check.add_argument("task", help="task name (see `symgen tasks`)")
    check.add_argument("--input", required=True, metavar="FILE", help="JSONL (or JSON array) with the task's fields")
    check.add_argument("--output", metavar="FILE", help="write one JSON line per input row, in order: valid, status, reason")
    check.add_argument("--timeout", dest="timeout_s", type=float, default=GenerateSettings.timeout_s, metavar="S",
                       help=f"time limit of one answer's verification in seconds (default: {GenerateSettings.timeout_s:g})")
    _task_options(check, task)

    commands.add_parser("tasks", help="list the installed tasks", description="Every installed task (built-in or from "
                        "another package) with its fields, verifier and source.")

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

    verify = commands.add_parser(
        "verify",
        help="recompute a dataset's kept rows from its candidates (no LLM)",
        description="Re-verify every published candidate, compare its outcome with the stored one, redo the "
        "majority vote and compare the kept set with the published rows. Exit status 1 when they differ, 2 when "
        "the source cannot be read. Options of the dataset's task (e.g. --db-dir DIR) may follow.",
    )
    verify.add_argument("source", help="a dataset folder, or REPO_ID[@REVISION] on the Hub")

    evaluate = commands.add_parser(
        "evaluate",
        help="score predictions, an LLM (few-shot) or a trained task model on real references",
        description="Score a task's programs against real reference rows (default: the task's packaged dev set) "
        "with the task's metrics (SQL: execution accuracy as the official Spider test-suite evaluator, exact match, "
        "valid SQL, hardness). The predictions come from MODEL (a model folder or a Hub id[@revision] trained by "
        "`symgen train`), from --generator (the LLM prompted with the demonstrations) or from --predictions. "
        "Writes metrics.json and predictions.jsonl. `symgen evaluate --task TASK --help` shows the task's options.",
    )
    evaluate.add_argument("model", nargs="?", help="a task model folder or Hub model id[@REVISION]")
    evaluate.add_argument("--task", help="task name (see `symgen tasks`); default: the model's")
    source = evaluate.add_mutually_exclusive_group()
    source.add_argument("--predictions", metavar="FILE", help="JSONL, one row per reference row, in order, with the "
                        "task's answer field (e.g. query)")
    source.add_argument("--generator", metavar="SPEC", help=f"an LLM prompted few-shot with the task's demonstrations: {SPEC_HELP}")
    evaluate.add_argument("--references", metavar="FILE", help="the real rows with gold programs, JSONL or a JSON array "
                          "such as Spider's dev.json (default: the task's packaged dev set)")
    evaluate.add_argument("--demos", metavar="FILE", help="with --generator: demonstrations (default: the task's packaged ones)")
    evaluate.add_argument("--timeout", dest="timeout_s", type=float, metavar="S",
                          help="time limit of executing one prediction in seconds (default: the task's; SQL 60 as the official evaluator)")
    evaluate.add_argument("--batch-size", type=int, default=16, metavar="N", help="with MODEL: questions per generation batch (default: 16)")
    evaluate.add_argument("--output-dir", metavar="DIR", help="where metrics.json and predictions.jsonl go "
                          "(default: symgen-evaluations/TASK-TIMESTAMP)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the requests (default: 0)")
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate on the first N reference rows only")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as one JSON object on the last line")
    _task_options(evaluate, task if task is not None and "evaluate" in _TASK_COMMANDS else None)

    commands.add_parser("train", add_help=False, help="fine-tune a small task model on a dataset (Accelerate; "
                        "`symgen train --help` lists its flags)")

    push_model = commands.add_parser(
        "push-model",
        help="publish a task model folder as a tagged version, with its model card",
        description="Upload a task model folder (written by `symgen train`; checkpoints left out) to a Hub model "
        "repository in one commit and tag it vX.Y.Z, with its card re-rendered for the repository. Existing tags "
        "are never moved.",
    )
    push_model.add_argument("folder", help="a folder written by `symgen train`")
    push_model.add_argument("repo_id", help="namespace/name of the model repository (created if needed)")
    push_model.add_argument("--version", required=True, metavar="X.Y.Z", help="the version; tagged vX.Y.Z")
    push_model.add_argument("--merge", action="store_true", help="LoRA adapters: push the base model with the adapters "
                            "merged in (whole weights) instead of the adapters")
    _hub_options(push_model)

    reproduce = commands.add_parser(
        "reproduce",
        help="re-derive a published task model's numbers from its artifacts",
        description="Download a task model and, from its card, the evaluation it reports (task, references and "
        "their sha256, dataset revision); evaluate it again and print reported and reproduced metrics side by "
        "side. Exit status 1 when a metric differs by more than --tolerance. The task's options (e.g. --db-dir DIR) "
        "may follow.",
    )
    reproduce.add_argument("model", help="a model folder, or REPO_ID[@REVISION] on the Hub")
    reproduce.add_argument("--references", metavar="FILE", help="the evaluation file the card names, when it is not "
                           "the task's packaged dev set (its sha256 is checked)")
    reproduce.add_argument("--tolerance", type=float, default=0.005, help="largest accepted difference of a metric (default: 0.005)")
    reproduce.add_argument("--retrain", action="store_true", help="also re-train from the card's dataset revision and "
                           "settings, and compare that model's metrics too")
    reproduce.add_argument("--output-dir", metavar="DIR", help="with --retrain: where the re-trained model goes "
                           "(default: a temporary folder)")
    reproduce.add_argument("--batch-size", type=int, metavar="N", help="generation batch (default: the card's)")
    return parser


#: Commands whose task's options join the parser (the task is a positional or --task).
_TASK_COMMANDS = ("generate", "check", "evaluate", "calibrate", "s3")

#: Generation settings that `symgen calibrate` does not take (it writes no dataset, keeps every V).
CALIBRATE_EXCLUDED = ("min_votes", "num_questions", "output", "overwrite")
#: Generation settings that `symgen s3` does not take (it writes its rounds in --output-dir).
S3_EXCLUDED = ("questions", "output", "overwrite", "work_dir")


def _task_options(parser: argparse.ArgumentParser, task) -> None:
    if task is None:
        return
    group = parser.add_argument_group(f"options of the task {task.name}")
    for option in task.options:
        group.add_argument(option.flag, dest=f"task_option_{option.name}", type=option.type, default=option.default,
                           metavar=option.metavar, help=option.help)


def _hub_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--revision", metavar="BRANCH", help="commit to this branch (created from main if needed)")
    parser.add_argument("--commit-message", metavar="MSG", help="default: 'symgen: vX.Y.Z'")


def _given_task_options(args: argparse.Namespace) -> dict:
    prefix = "task_option_"
    return {name[len(prefix):]: value for name, value in vars(args).items() if name.startswith(prefix)}


def _settings(args: argparse.Namespace, exclude: tuple[str, ...] = (), **overrides):
    """The :class:`GenerateSettings` of a command line: its setting flags (but ``exclude``d ones),
    the task and its options; ``overrides`` replace values."""
    from .pipeline import GenerateSettings
    from .pipeline.settings import command_line_fields

    values = {f.name: getattr(args, f.name) for f in command_line_fields() if f.name not in exclude}
    return GenerateSettings(task=args.task, task_options=_given_task_options(args), **{**values, **overrides})


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import generate
    from .publish import format_summary

    settings = _settings(args)
    if args.version and not args.push_to_hub:
        raise InputError("--version is used with --push-to-hub (or later with `symgen push DIR REPO_ID --version X.Y.Z`)")
    if args.version:
        from .hub.push import parse_version

        parse_version(args.version)  # a bad version fails before any work
    if args.dry_run:
        from .pipeline import dry_run

        print(dry_run(settings))
        return 0
    result = generate(settings)
    if result is None:  # a process other than the main one of `accelerate launch`: its shard is merged there
        return 0
    print(format_summary(result))
    if args.push_to_hub:
        from huggingface_hub import HfApi

        from .hub import next_version, push

        version = args.version or next_version(HfApi(), args.push_to_hub)
        _print_push(push(result.output, args.push_to_hub, version, private=args.private,
                         revision=args.revision, commit_message=args.commit_message))
    return 0


def _check(args: argparse.Namespace) -> int:
    from .pipeline.check import check_answers
    from .tasks import get_task

    report = check_answers(get_task(args.task), args.input, args.output, _given_task_options(args), args.timeout_s)
    for status, count in report.by_status.items():
        print(f"{status:<10} {count}")
    for reason, count in report.reasons:
        print(f"  {count} x {reason}")
    if args.output:
        print(f"wrote {args.output}")
    print(f"valid {report.valid} of {report.total}")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from .tasks import registered_tasks

    rows = [("task", "family", "fields (question -> answer; context)", "verifier", "source")]
    for name, entry in registered_tasks().items():
        try:
            task = entry.load()
        except SymgenError as error:
            rows.append((name, "?", f"cannot be loaded: {error}", "?", entry.source))
            continue
        context = f"; {', '.join(task.context_fields)}" if task.context_fields else ""
        fields = f"{task.question_field} -> {task.answer_field}{context}"
        verifier = task.verifier_class.name if task.verifier_class else "?"
        if task.synthesis == "label-conditioned":  # classification: the pair is the input, no verifier
            fields, verifier = f"{', '.join(task.question_fields)} -> {task.answer_field}", "none (label-conditioned)"
        rows.append((name, task.family, fields, verifier, entry.source))
    _print_table(rows)
    return 0


def _print_table(rows: list[tuple]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


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
    header = ("version", "commit", "parent", "task", "questions", "kept", "requests", "tokens billed", "generator")

    def tokens(bill: dict | None) -> str:
        if not bill or "prompt_tokens" not in bill:
            return "?"
        return f"{bill['prompt_tokens']:,} + {bill.get('completion_tokens', 0):,}"

    _print_table([header] + [
        (v.tag, v.commit[:12], v.parent or "-", v.task, str(v.questions if v.questions is not None else "?"),
         str(v.kept if v.kept is not None else "?"), str((v.bill or {}).get("requests", "?")), tokens(v.bill), v.generator)
        for v in versions
    ])
    return 0


def _verify(args: argparse.Namespace, extra: list[str]) -> int:
    from .hub import reverify

    report = reverify(args.source, parse_task_flags(extra))
    for line in report.differences:
        print(line)
    print(f"re-executed the {report.candidates_checked} published candidates and compared their stored outcomes")
    verdict = "identical" if report.identical else f"{len(report.differences)} differences"
    print(f"{report.source}: published {report.published} rows, re-verification keeps {report.recomputed}: {verdict}")
    return 0 if report.identical else EXIT_DIFFERENCES


def _evaluate(args: argparse.Namespace) -> int:
    import datetime
    import json
    from functools import partial

    from .pipeline import evaluate as evaluation
    from .tasks import get_task

    if args.model is None and args.task is None:
        raise InputError("give --task TASK (or a task model, whose task is known)")
    if args.model is not None and (args.predictions or args.generator):
        raise InputError("give one source of predictions: MODEL, --generator or --predictions")
    if args.model is None and not (args.predictions or args.generator):
        raise InputError("give the predictions to score: MODEL, --generator SPEC or --predictions FILE")
    if args.demos and not args.generator:
        raise InputError("--demos is used with --generator")
    if args.model is not None and args.task is None:
        from .training.task_model import TaskModelConfig, download_model

        folder = Path(args.model) if Path(args.model).is_dir() else download_model(args.model)[0]
        args.task = TaskModelConfig.load(folder).task
    task = get_task(args.task)
    details: dict = {}
    if args.model is not None:
        predict, details = evaluation.model_predictions(args.model, task, args.batch_size)
        source = f"model:{args.model}"
    elif args.predictions:
        source = f"predictions:{args.predictions}"

        def predict(rows, knowledge):
            return evaluation.read_predictions(args.predictions, task, len(rows))
    else:
        from .generators import EventLoopThread, from_spec

        demonstrations = task.load_demonstrations(args.demos)
        generator = from_spec(args.generator)
        loop = EventLoopThread()
        try:
            loop.run(generator.connect())
        except BaseException:
            loop.close()
            raise
        source = f"generator:{generator.spec}"
        details["generator"] = {"spec": generator.spec, "model": generator.model, "revision": generator.model_revision,
                                "demonstrations": len(demonstrations)}
        predict = partial(_few_shot, evaluation.few_shot_predictions, task, generator, demonstrations, loop, args.seed)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output_dir = args.output_dir or os.path.join("symgen-evaluations", f"{task.name}-{stamp}")
    result = evaluation.evaluate(task, predict, source, references=args.references,
                                 task_options={**_given_task_options(args), **args.loose_options}, timeout_s=args.timeout_s,
                                 output_dir=output_dir, details=details, limit=args.limit)
    print(evaluation.format_evaluation(result))
    if args.json:
        print(json.dumps(result.evaluation.as_dict()))
    return 0


def _push_model(args: argparse.Namespace) -> int:
    from .hub.push_model import push_model

    result = push_model(args.folder, args.repo_id, args.version, private=args.private, revision=args.revision,
                        commit_message=args.commit_message, merge=args.merge)
    parent = f" (parent {result.parent_tag})" if result.parent_tag else ""
    print(f"pushed {result.repo_id} {result.tag}{parent}: commit {result.commit}")
    print(f"reproduce it with: symgen reproduce {result.repo_id}@{result.tag}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from .hub.reproduce import format_report, reproduce

    report = reproduce(args.model, references=args.references, task_options=args.loose_options,
                       tolerance=args.tolerance, retrain=args.retrain, output_dir=args.output_dir,
                       batch_size=args.batch_size)
    print(format_report(report))
    return 0 if report.reproduced_ok else EXIT_DIFFERENCES


def _few_shot(predictions, task, generator, demonstrations, loop, seed, rows, knowledge):
    try:
        return predictions(task, rows, knowledge, generator, demonstrations, loop, seed)
    finally:
        loop.run(generator.aclose())
        loop.close()


class _ProgressFriendlyHandler(logging.Handler):
    """Writes log records to the current ``sys.stderr`` through ``tqdm.write``, so that notices
    (retries, warnings) appear between progress bars instead of through them."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


def _calibrate(args: argparse.Namespace) -> int:
    import json

    from .pipeline.calibrate import calibrate, format_calibration, write_calibration

    output = Path(args.output_dir or Path("symgen-calibrations") / args.task)
    calibration = calibrate(_settings(args, CALIBRATE_EXCLUDED, work_dir=args.work_dir or str(output / ".work")))
    if calibration is None:  # a process other than the main one of `accelerate launch`
        return 0
    write_calibration(calibration, output)
    print(format_calibration(calibration))
    print(f"wrote {output / 'calibration.json'}, {output / 'calibration.md'} and {output / 'calibration.png'}")
    if args.json:
        print(json.dumps(calibration.as_dict()))
    return 0


def _s3(args: argparse.Namespace, train_flags: list[str]) -> int:
    from .s3 import S3Settings, run_s3
    from .training.config import overrides_of

    settings = S3Settings(
        generate=_settings(args, S3_EXCLUDED), validation=args.validation, test=args.test,
        output_dir=args.output_dir or f"./{args.task}-s3", rounds=args.rounds, patience=args.patience,
        test_every=args.test_every, model=args.model, train=overrides_of(train_flags), errors_per_prompt=args.errors_per_prompt,
        examples_per_error=args.examples_per_error, max_errors=args.max_errors, push_to_hub=args.push_to_hub,
        version=args.version, private=args.private, resume=args.resume,
    )
    result = run_s3(settings)
    metric = result.rounds[-1].get("metric", "accuracy") if result.rounds else "accuracy"
    _print_table([("round", "version", "rows", "added", "errors", f"validation {metric}", f"test {metric}", "pushed")] + [
        (r["round"], r["version"], r["rows"], r["examples_added"], r["errors_extrapolated"],
         f"{r['validation_after']:.4f}", "-" if r["test_after"] is None else f"{r['test_after']:.4f}",
         (r.get("pushed") or {}).get("tag", "-")) for r in result.rounds])
    if result.stopped_early:
        print(f"stopped early: validation {metric} did not improve for {args.patience} rounds")
    print(f"rounds in {result.output} (cards: {result.output}/round-N/dataset/README.md)")
    return 0


def _show_notices() -> None:
    """Show the library's warnings (``symgen_datasets`` loggers) on stderr, once per process."""
    logger = logging.getLogger("symgen_datasets")
    if not any(isinstance(handler, _ProgressFriendlyHandler) for handler in logger.handlers):
        handler = _ProgressFriendlyHandler()
        handler.setFormatter(logging.Formatter("symgen: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def _task_of(argv: list[str]):
    """The task named on a ``generate``/``check`` (positional) or ``evaluate`` (``--task``)
    command line, if it is installed (its options then join the parser); ``None`` otherwise (an
    unknown name fails later with its message)."""
    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("command", nargs="?")
    finder.add_argument("task", nargs="?")
    finder.add_argument("--task", dest="task_flag")
    found, _ = finder.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    if found.command == "evaluate":
        found.task = found.task_flag
    if found.command not in _TASK_COMMANDS or not found.task:
        return None
    from .tasks import get_task

    try:
        return get_task(found.task)
    except SymgenError:
        return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``symgen``; returns the exit status: 0 done, 1 differences found by
    ``verify``, 2 bad input / a failed request / a busy folder or database, 3 stopped at
    ``--max-requests`` (resumable), 130 interrupted (see :mod:`symgen_datasets.errors`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    _show_notices()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "symgen"
    try:
        parser = _parser(_task_of(argv) if argv and argv[0] in _TASK_COMMANDS else None)
        if argv and argv[0] == "train":
            command = "train"
            from .training.finetune import main as train

            return train(argv[1:])
        args, extra = parser.parse_known_args(argv)
        command = args.command
        if command == "s3":
            from .tasks import get_task

            get_task(args.task)
            return _s3(args, extra)
        if extra and command not in ("verify", "evaluate", "reproduce"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if command == "evaluate" and args.limit is not None and args.limit < 1:
            parser.error(f"--limit {args.limit}: must be a positive number of rows")
        if command == "evaluate" and extra and args.task is not None and _task_of(argv) is not None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")  # the task's own flags are known here
        args.loose_options = parse_task_flags(extra) if command in ("evaluate", "reproduce") else {}
        if command == "verify":
            return _verify(args, extra)
        if command in ("generate", "check", "calibrate"):
            from .tasks import get_task

            get_task(args.task)  # an unknown task: its own message, listing the known ones
        return {"generate": _generate, "check": _check, "tasks": _tasks, "push": _push, "versions": _versions,
                "evaluate": _evaluate, "push-model": _push_model, "reproduce": _reproduce,
                "calibrate": _calibrate}[command](args)
    except BudgetExhausted as stop:  # a clean, resumable stop, not a failure
        print(f"symgen {command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except SymgenError as error:
        print(f"symgen {command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"symgen {command}: interrupted; nothing was written (the same command resumes)", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
