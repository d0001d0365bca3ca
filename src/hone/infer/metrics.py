"""BLEU-4 and ROUGE-1/2/L of predictions against references, computed as LLaMA-Factory's ``eval_bleu_rouge`` does.

Per pair: ROUGE F-scores on words (jieba segments Chinese into words and English at spaces and punctuation),
BLEU-4 on characters with smoothing method 3; each score ×100 rounded to 4 places, then averaged. Matching
that method keeps hone's numbers comparable with results people already report.
"""
from __future__ import annotations

import logging
from typing import Sequence

from ..errors import HoneError

KEYS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
EXTRA = "metrics"


class MetricsError(HoneError):
    """Metrics cannot be computed (a missing library, no references)."""


def _libs():
    try:
        import jieba
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from rouge_chinese import Rouge
    except ImportError as e:
        raise MetricsError(f"generation metrics need the `{EXTRA}` extra ({e.name} is missing): "
                           f"pip install 'hone[{EXTRA}]'") from None
    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter is not the user's business
    return jieba, Rouge, sentence_bleu, SmoothingFunction


def pair_scores(prediction: str, reference: str) -> dict[str, float]:
    """The four scores (0-100) of one prediction against its reference."""
    jieba, Rouge, sentence_bleu, SmoothingFunction = _libs()
    hyp, ref = list(jieba.cut(prediction)), list(jieba.cut(reference))
    if not " ".join(hyp).split() or not " ".join(ref).split():
        rouge = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0}
    else:
        got = Rouge().get_scores(" ".join(hyp), " ".join(ref))[0]
        rouge = {k: v["f"] for k, v in got.items()}
    out = {k: round(v * 100, 4) for k, v in rouge.items()}
    bleu = sentence_bleu([list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3)
    out["bleu-4"] = round(bleu * 100, 4)
    return {k: out[k] for k in KEYS}


def bleu_rouge(predictions: Sequence[str], references: Sequence[str | None]) -> dict[str, float]:
    """Mean scores over the pairs; every prediction needs a reference."""
    if len(predictions) != len(references):
        raise MetricsError(f"{len(predictions)} predictions but {len(references)} references")
    missing = [i for i, r in enumerate(references) if r is None]
    if missing or not references:
        raise MetricsError("the data has no reference answers" + (f" (row {missing[0] + 1} has none)" if missing
                           and len(missing) < len(references) else "") + "; metrics compare predictions with "
                           "the data's assistant replies, so give a dataset whose rows end with one")
    scores = [pair_scores(p, r) for p, r in zip(predictions, references) if r is not None]
    return {k: float(sum(s[k] for s in scores) / len(scores)) for k in KEYS}
