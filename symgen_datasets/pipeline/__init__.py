"""The SymGen pipeline: stages (batched map functions) and the ``generate`` run."""

from .run import GenerateResult, GenerateSettings, format_summary, generate
from .stages import StageContext, generate_answers, generate_questions, select, verify

__all__ = [
    "GenerateResult",
    "GenerateSettings",
    "StageContext",
    "format_summary",
    "generate",
    "generate_answers",
    "generate_questions",
    "select",
    "verify",
]
