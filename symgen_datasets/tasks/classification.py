"""Sentence-pair classification (natural language inference: GLUE's RTE), S3's own setting.

The task model is an encoder with a classification head (transformers'
``AutoModelForSequenceClassification``; offline default: all-MiniLM-L6-v2, see
:func:`symgen_datasets.training.task_model.resolve_base_model`), not a program writer: the
"answer" is a label id, as GLUE stores it. New data is made by label-conditioned generation
(ZeroGen: the LLM is told the label and writes a pair) and, in S3, by extrapolating the task
model's errors; there is no verifier (S3 keeps the label it asked for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

from ..metrics.classification import classification_scores
from .base import SamplingDefaults, Task, TaskKnowledge, check_aligned

_PAIR = re.compile(r"^\s*(?P<premise>.+?)\s*\n+\s*Hypothesis\s*:\s*(?P<hypothesis>[^\n]+)", re.S | re.I)


def unquote(text: str) -> str:
    """``text`` with its whitespace collapsed and without one pair of double quotes that wraps
    all of it (``'"A man sleeps."'`` -> ``'A man sleeps.'``); inner quotes stay
    (``'"A" and "B"'`` is unchanged).

    Why: LLMs often quote the sentence they were asked to write, and not equally often for every
    label. In S3's released RTE rounds, 94% of the not-entailment hypotheses are wrapped in quotes
    and 41% of the entailment ones, against none of real RTE's: a classifier learns the quote, not
    the inference (``benchmarks/s3_rte.py`` measures it).
    """
    text = " ".join(text.split())
    if len(text) > 1 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:
        return text[1:-1].strip()
    return text


@dataclass(frozen=True)
class SentencePairTask(Task):
    """A sentence pair (``premise``, ``hypothesis``: RTE's field names) and a label id.

    Instance attributes (besides :class:`Task`'s):
        labels: the label names, in id order (GLUE RTE: ``entailment`` = 0, ``not_entailment`` = 1).
        label_descriptions: for each label, what makes a pair have it (ends the
            label-conditioned prompt: "Write one new example in which ...").
    """

    labels: tuple[str, ...] = ("entailment", "not_entailment")
    label_descriptions: tuple[str, ...] = ()
    sampling: SamplingDefaults = SamplingDefaults(question_max_new_tokens=160, answer_max_new_tokens=8,
                                                  question_stop=("\n\n", "\nLabel:"), answer_stop=("\n",))

    family: ClassVar[str] = "text-classification"
    question_field: ClassVar[str] = "premise"
    context_fields: ClassVar[tuple[str, ...]] = ("hypothesis",)
    answer_field: ClassVar[str] = "label"
    field_descriptions: ClassVar[dict[str, str]] = {
        "premise": "a text",
        "hypothesis": "a sentence that the premise may or may not entail",
        "label": "the label id (GLUE: 0 = entailment, 1 = not_entailment)",
    }
    tags: ClassVar[tuple[str, ...]] = ("natural-language-inference", "s3", "zerogen")
    task_categories: ClassVar[tuple[str, ...]] = ("text-classification",)
    filter_question_length: ClassVar[bool] = False
    primary_metric: ClassVar[str] = "accuracy"
    model_type: ClassVar[str] = "classification"
    synthesis: ClassVar[str] = "label-conditioned"
    extrapolation_template: ClassVar[str] = "nli_synthesis.j2"

    def _object_schema(self, title: str, fields: Sequence[str], description: str) -> dict:
        schema = super()._object_schema(title, fields, description)
        if self.answer_field in schema["properties"]:
            schema["properties"][self.answer_field] = {"type": "integer", "enum": list(range(len(self.labels))),
                                                       "description": self.describe_field(self.answer_field)}
        return schema

    # --- the task model: an encoder reads the pair, a head picks the label ---------------------

    def classification_inputs(self, row: dict) -> tuple[str, str]:
        """The text pair the encoder reads (``premise``, ``hypothesis``)."""
        return row["premise"], row["hypothesis"]

    def training_target(self, row: dict) -> str:
        return self.labels[int(row[self.answer_field])]

    def evaluate(self, references: Sequence[dict], predictions: Sequence[Any], knowledge: TaskKnowledge,
                 timeout_s: float = 10.0):
        """Accuracy (primary, as S3 and GLUE report it) and macro F1 of label ids; a prediction
        may also be a label name. See :func:`symgen_datasets.metrics.classification.classification_scores`."""
        check_aligned(references, predictions)
        return classification_scores([self.label_id(p) for p in predictions],
                                     [int(r[self.answer_field]) for r in references], self.labels)

    def label_id(self, value: Any) -> int | None:
        """A label id from an id, a digit string or a label name; ``None`` for anything else."""
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, int):
            return value if 0 <= value < len(self.labels) else None
        text = str(value).strip()
        if text.isdigit():
            return self.label_id(int(text))
        return self.labels.index(text) if text in self.labels else None

    # --- synthesis: label-conditioned generation and S3's error extrapolation -------------------

    def seed_contexts(self, knowledge: TaskKnowledge) -> list[dict[str, Any]]:
        """One context per label: round 0 asks for pairs of each label in turn (ZeroGen)."""
        return [{self.answer_field: label} for label in range(len(self.labels))]

    def extrapolation_context(self, error: dict) -> dict[str, Any]:
        """Errors are extrapolated per gold label: new pairs keep the label the model missed."""
        return {self.answer_field: int(error[self.answer_field])}

    def extrapolation_prompt(self, context: dict, errors: Sequence[dict], knowledge: TaskKnowledge,
                             demonstrations: Sequence[dict], count_tokens, max_tokens: int | None = None) -> str:
        """The label-conditioned prompt for ``context["label"]``, with the ``errors`` (pairs of
        that gold label the model got wrong) when there are any (S3), without them for seed
        synthesis (ZeroGen).

        Raises:
            InputError: the prompt cannot fit ``max_tokens`` even with one error.
        """
        label = int(context[self.answer_field])
        description = self.label_descriptions[label] if self.label_descriptions else f'the label is "{self.labels[label]}".'

        def render(num_errors: int, detail: int) -> str:
            return self.render(self.extrapolation_template, instruction=self.instruction, errors=list(errors)[:num_errors],
                               label=self.labels[label], description=description).rstrip("\n") + " "

        return self.fit_prompt(render, max(1, len(errors)), count_tokens, max_tokens,
                               f"the synthesis prompt for label {self.labels[label]!r}")

    def parse_extrapolated(self, text: str, context: dict) -> dict | None:
        """A complete row from a completion that continues ``Premise:``: the premise, then a
        ``Hypothesis:`` line; the label is the context's. ``None`` when either is missing."""
        match = _PAIR.match(text)
        if not match:
            return None
        premise, hypothesis = unquote(match["premise"]), unquote(match["hypothesis"])
        if len(premise.split()) < 3 or len(hypothesis.split()) < 2:
            return None
        return {"premise": premise, "hypothesis": hypothesis, self.answer_field: int(context[self.answer_field])}

    def card_summary(self) -> str:
        return ("Synthetic sentence pairs (`premise`, `hypothesis`) with labels (`label`, GLUE's ids), written by an "
                "LLM told which label to write (label-conditioned generation) or asked to extrapolate a small "
                "model's errors (S3). Labels are the ones asked for: no verifier checks them.")


RTE = SentencePairTask(
    name="rte",
    pretty_name="RTE (synthetic, S3)",
    description="recognising textual entailment: premise/hypothesis pairs, label 0 = entailment, 1 = not",
    license="other",
    source_datasets=("glue rte", "Synthesis Step by Step (Wang et al., 2023) RTE"),
    data_dir="rte",
    instruction="Each example is a premise and a hypothesis; the label says whether the premise entails the hypothesis.",
    default_num_questions=40,
    label_descriptions=("the premise entails the hypothesis: if the premise is true, the hypothesis must be true.",
                        "the premise does not entail the hypothesis: the hypothesis may be false, or is not stated, "
                        "when the premise is true."),
)
