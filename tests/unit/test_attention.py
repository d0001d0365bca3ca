"""Attention: by default the best the model supports; an explicit choice is honoured or refused clearly."""
from __future__ import annotations

import pytest
from families import save_tiny

from hone.config import ModelCfg
from hone.errors import ModelError
from hone.models.load import choose_precision, load_model


@pytest.fixture(scope="module")
def gemma2_dir(tmp_path_factory):
    return save_tiny("gemma2", tmp_path_factory.mktemp("gemma2"))


def test_default_loads_a_model_that_has_no_sdpa(gemma2_dir):
    model = load_model(gemma2_dir, ModelCfg(), choose_precision("fp32", "cpu"))
    assert model.config._attn_implementation == "eager"  # transformers' pick: Gemma 2 has no sdpa


def test_default_picks_sdpa_where_the_model_has_it(tiny_model_dir):
    model = load_model(tiny_model_dir, ModelCfg(), choose_precision("fp32", "cpu"))
    assert model.config._attn_implementation == "sdpa"


def test_explicit_choice_is_honoured_or_refused_by_name(gemma2_dir, tiny_model_dir):
    model = load_model(tiny_model_dir, ModelCfg(attn_impl="eager"), choose_precision("fp32", "cpu"))
    assert model.config._attn_implementation == "eager"
    with pytest.raises(ModelError, match="cannot use attn_impl sdpa.*attn_impl: auto"):
        load_model(gemma2_dir, ModelCfg(attn_impl="sdpa"), choose_precision("fp32", "cpu"))
