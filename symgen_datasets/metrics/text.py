"""Metrics of the parsed languages, as SymGen's evaluators compute them.

* MTOP: exact match (the same string, or the same canonical TOP serialisation) and template
  accuracy (the same tree once the words are dropped: intents and slots only), as SymGen's
  ``metrics/mtop/evaluator.py`` with its TOP utilities;
* Break: exact match of the normalised QDMR decompositions (the verifier's normal form);
* NL2Bash: character-level BLEU over the corpus (SymGen scores 4-gram BLEU on characters; here
  sacrebleu, ``tokenize="char"``, no smoothing) and exact match after folding white space.
"""

from __future__ import annotations

from ..verifiers.qdmr import check_qdmr
from ..verifiers.top import TOPSyntaxError, parse_top
from . import Evaluation, share


def _top(form: str):
    try:
        return parse_top(form)
    except TOPSyntaxError:
        return None


def mtop_scores(predictions: list[str], references: list[str]) -> Evaluation:
    """Exact match and template accuracy of TOP logical forms."""
    rows = []
    for predicted, gold in zip(predictions, references):
        p, g = _top(predicted), _top(gold)
        exact = predicted.strip() == gold.strip() or (p is not None and g is not None and p.serialize() == g.serialize())
        template = exact or (p is not None and g is not None and p.frame() == g.frame())
        rows.append({"correct": exact, "template": template, "valid": p is not None})
    return Evaluation({"exact_match": share([r["correct"] for r in rows]),
                       "template_accuracy": share([r["template"] for r in rows]),
                       "valid": share([r["valid"] for r in rows])}, "exact_match", rows)


def qdmr_scores(predictions: list[str], references: list[str]) -> Evaluation:
    """Normalised exact match of QDMR decompositions."""
    rows = []
    for predicted, gold in zip(predictions, references):
        p, g = check_qdmr(predicted), check_qdmr(gold)
        rows.append({"correct": p.ok and g.ok and p.key == g.key, "valid": p.ok, **({} if p.ok else {"error": p.error})})
    return Evaluation({"exact_match": share([r["correct"] for r in rows]), "valid": share([r["valid"] for r in rows])},
                      "exact_match", rows)


def bash_scores(predictions: list[str], references: list[str]) -> Evaluation:
    """Character-level corpus BLEU (fraction) and exact match of command lines."""
    import sacrebleu

    rows = [{"correct": " ".join(p.split()) == " ".join(g.split())} for p, g in zip(predictions, references)]
    bleu = sacrebleu.corpus_bleu(predictions, [references], tokenize="char", smooth_method="none").score / 100 if rows else 0.0
    bleu = min(bleu, 1.0)  # sacrebleu's 100.00000000000004 for identical corpora
    return Evaluation({"char_bleu": bleu, "exact_match": share([r["correct"] for r in rows])}, "char_bleu", rows)
