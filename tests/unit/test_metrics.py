"""Generation metrics equal LLaMA-Factory's `eval_bleu_rouge` numbers.

The expected values below were computed with LLaMA-Factory's method (``ComputeSimilarity`` in
src/llamafactory/train/sft/metric.py: jieba words for ROUGE via rouge-chinese, character BLEU-4 with
smoothing method 3, each ×100 rounded to 4 places, then the mean) on these exact pairs.
"""
from __future__ import annotations

import pytest

from hone.infer.metrics import MetricsError, bleu_rouge, pair_scores

PAIRS = [
    ("我是一个人工智能助手，由Whetstone Labs开发。",
     "我是 Sparrow，由 Whetstone Labs 开发的人工智能助手。"),
    ("The capital of France is Paris.", "Paris is the capital of France."),
    ("", "Some reference text."),
    ("今天天气很好，我们去公园散步吧。", "今天天气不错，适合去公园散步。"),
    ("I am Sparrow, an AI assistant developed by Whetstone Labs.",
     "I am Sparrow, an AI assistant developed by Whetstone Labs."),
    ("苹果 apple 和 香蕉 banana", "香蕉和苹果都是水果 fruit"),
]
PER_PAIR = [
    {"rouge-1": 86.9565, "rouge-2": 57.1429, "rouge-l": 69.5652, "bleu-4": 50.3737},
    {"rouge-1": 85.7143, "rouge-2": 33.3333, "rouge-l": 57.1429, "bleu-4": 83.0239},
    {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0},
    {"rouge-1": 66.6667, "rouge-2": 25.0, "rouge-l": 66.6667, "bleu-4": 40.325},
    {"rouge-1": 100.0, "rouge-2": 100.0, "rouge-l": 100.0, "bleu-4": 100.0},
    {"rouge-1": 50.0, "rouge-2": 0.0, "rouge-l": 16.6667, "bleu-4": 6.6324},
]
MEAN = {"rouge-1": 64.88958333333333, "rouge-2": 35.9127, "rouge-l": 51.67358333333333,
        "bleu-4": 46.725833333333334}


@pytest.mark.parametrize("i", range(len(PAIRS)))
def test_each_pair_matches_the_reference_method(i):
    assert pair_scores(*PAIRS[i]) == pytest.approx(PER_PAIR[i], abs=1e-9)


def test_mean_matches_the_reference_method():
    got = bleu_rouge([p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert got == pytest.approx(MEAN, abs=1e-9)


def test_missing_references_are_one_clear_sentence():
    with pytest.raises(MetricsError, match="no reference answers"):
        bleu_rouge(["a"], [None])
