"""The FAQ quotes what hone prints: every quoted message still occurs in the source, and the ones that can be
produced cheaply are produced here and compared with the quote."""
from __future__ import annotations

import re

import pytest

from guide_pages import LANGS, blocks, page, source_strings, uncovered
from hone.errors import HoneError

PREFIXES = ("error: ", "[hone] ")


def quoted(lang: str) -> list[str]:
    """Each ```text block of the FAQ is one message as hone prints it (values shortened to …)."""
    return [b.strip() for b in blocks(page(lang, "faq.md"), "text")]


def fits(quote: str, actual: str) -> bool:
    """Does a real message match the quote, reading each … as "anything"?"""
    body = quote.split(": ", 1)[1] if quote.startswith("error: ") else quote
    pattern = ".*?".join(re.escape(" ".join(p.split())) for p in body.split("…"))
    return re.fullmatch(pattern, " ".join(actual.split()), re.S) is not None


def test_faq_quotes_the_same_messages_in_both_languages():
    assert quoted("en") == quoted("zh")
    assert len(quoted("en")) >= 10


@pytest.mark.parametrize("quote", quoted("en"))
def test_quoted_message_occurs_in_the_source(quote):
    corpus = source_strings()
    for line in (raw.strip() for raw in quote.splitlines()):
        for prefix in PREFIXES:
            if line.startswith(prefix):
                line = line[len(prefix):]
        for fragment in line.split("…"):
            if len(fragment.strip(" .,:;()'\"")) < 4:
                continue
            missing = uncovered(fragment, corpus)
            assert missing is None, f"FAQ quotes text hone no longer prints: {missing!r} (in {quote!r})"


def _quote(start: str) -> str:
    hits = [q for q in quoted("en") if q.startswith(start)]
    assert len(hits) == 1, start
    return hits[0]


def test_unknown_template_prints_the_quoted_message_not_a_traceback():
    from hone.templates.base import TEMPLATES, _load_builtins

    _load_builtins()
    with pytest.raises(HoneError) as e:  # a HoneError: the CLI prints it alone, without a traceback
        TEMPLATES.get("chatlm")
    assert fits(_quote("error: unknown template"), str(e.value))


def test_missing_template_message(tokenizer):
    import copy

    from hone.templates.hf import HFTemplate

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    with pytest.raises(HoneError) as e:
        HFTemplate.from_tokenizer(bare)
    assert fits(_quote("error: this model's tokenizer has no chat template"), str(e.value))


def test_qlora_on_cpu_message():
    import torch

    from hone.config import load_config
    from hone.models.load import quantization_config

    if torch.cuda.is_available():
        pytest.skip("the message is for machines without CUDA")
    with pytest.raises(HoneError) as e:
        quantization_config(4, load_config({}).model, torch.float32)
    assert fits(_quote("error: QLoRA"), str(e.value))


def test_unknown_key_message():
    from hone.config import load_config, parse_cli_overrides

    with pytest.raises(HoneError) as e:
        load_config(None, parse_cli_overrides(["--lora_rnk", "8"]))
    assert fits(_quote("error: …unknown key"), str(e.value))


def test_run_dir_taken_message(tmp_path):
    from hone.runs import claim_run_dir

    (tmp_path / "checkpoint-40").mkdir()
    with pytest.raises(HoneError) as e:
        claim_run_dir(tmp_path, overwrite=False)
    assert fits(_quote("error: … already holds a run"), str(e.value))


@pytest.mark.parametrize("max_tokens", [0, 512])
def test_memory_refusal_message(max_tokens):
    from hone.training.memory import GiB, Estimate, check

    too_big = Estimate(held=1 * GiB, optimizer=2 * GiB, activations=8 * GiB, loss=1 * GiB, tokens=4096,
                       available=3 * GiB, device="cpu")
    with pytest.raises(HoneError) as e:
        check(too_big, enabled=True, max_tokens=max_tokens, say=False)
    assert fits(_quote("error: this run needs about"), str(e.value))
