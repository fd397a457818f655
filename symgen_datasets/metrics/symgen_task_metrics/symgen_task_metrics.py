"""The metrics of every symgen-datasets task as an ``evaluate`` module (loads offline from its
folder: ``evaluate.load(symgen_datasets.metrics.EVALUATE_MODULE, TASK)``).

Backed by the same functions as ``symgen evaluate`` (:meth:`Task.evaluate
<symgen_datasets.tasks.base.Task.evaluate>`): the configuration name is the task's name, each
prediction is a program (string), each reference a real row of the task as a JSON string (its
gold program and context, e.g. Spider's ``{"question", "query", "db_id"}``). Task options
(``db_dir`` for SQL, ``sandbox`` for Python) and ``timeout_s`` are keyword arguments of
``compute``.
"""

import json

import datasets
import evaluate

_CITATION = """\
@inproceedings{ye-etal-2023-generating,
  title = {Generating Data for Symbolic Language with Large Language Models},
  author = {Ye, Jiacheng and Li, Chengzu and Kong, Lingpeng and Yu, Tao},
  booktitle = {Proceedings of EMNLP 2023},
  year = {2023}
}
"""

_DESCRIPTION = """\
Task metrics of symgen-datasets: execution accuracy with the official Spider test-suite
evaluator's semantics, exact match, valid SQL and Spider's hardness breakdown for text-to-SQL;
exact match and template accuracy for MTOP; normalised exact match for Break (QDMR); character
BLEU and exact match for NL2Bash; pass@1 with each problem's own tests, sandboxed, for Python.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of programs (str), one per reference.
    references: list of JSON strings, the real rows (with the task's gold program field).
    timeout_s: time limit of running one prediction (seconds; SQL default 60, Python 10).
    other keyword arguments: the task's options (e.g. db_dir="spider/database").
Returns:
    the task's metrics (fractions), its primary metric first; "breakdown" for Spider's hardness.
Examples:
    >>> metric = evaluate.load(EVALUATE_MODULE, "break")
    >>> gold = {"question_text": "how many dogs?", "decomposition": "return dogs ;return number of #1"}
    >>> metric.compute(predictions=[gold["decomposition"]], references=[json.dumps(gold)])["exact_match"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SymgenTaskMetrics(evaluate.Metric):
    """The metrics of one symgen-datasets task (the configuration name)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            reference_urls=["https://github.com/taoyds/test-suite-sql-eval", "https://github.com/HKUNLP/SymGen"],
        )

    def _compute(self, predictions, references, timeout_s=None, **options):
        from symgen_datasets.tasks import get_task

        task = get_task(self.config_name)
        rows = [json.loads(reference) for reference in references]
        knowledge = task.load_knowledge(task.options_with_defaults(options))
        try:
            kwargs = {} if timeout_s is None else {"timeout_s": timeout_s}
            return task.evaluate(rows, list(predictions), knowledge, **kwargs).as_dict()
        finally:
            knowledge.cleanup()
