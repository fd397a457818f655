"""The SymGen pipeline: settings, the stages (batched map functions) and the run over them."""

from .run import GenerateResult, RunInputs, dry_run, generate, load_inputs, run
from .settings import GenerateSettings
from .stages import StageContext, generate_answers, generate_questions, select, verify, verify_stream

__all__ = [
    "GenerateResult",
    "GenerateSettings",
    "RunInputs",
    "StageContext",
    "dry_run",
    "generate",
    "generate_answers",
    "generate_questions",
    "load_inputs",
    "run",
    "select",
    "verify",
    "verify_stream",
]
