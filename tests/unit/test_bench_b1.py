"""bench/b1's own arithmetic: token counting, the eval loss, the FLOP count and the ratio table."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

B1 = Path(__file__).resolve().parents[2] / "bench" / "b1"
sys.path.insert(0, str(B1))

import data  # noqa: E402
import eval_loss  # noqa: E402
import flops  # noqa: E402
import table  # noqa: E402
import tools  # noqa: E402

ROW = {"instruction": "Name a colour.", "input": "Be short.", "output": "Blue."}


def test_encode_follows_the_chat_template(tokenizer):
    ids, labels = data.encode(tokenizer, ROW)
    conv = [{"role": "user", "content": "Name a colour.\nBe short."}, {"role": "assistant", "content": "Blue."}]
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(conv, tokenize=False)
    assert tokenizer.decode([t for t in labels if t != -100]) == "Blue.<|im_end|>\n"


def test_long_rows_are_cut_on_the_right(tokenizer):
    long_row = {**ROW, "output": "word " * 400}
    full, _ = data.encode(tokenizer, long_row, max_length=10_000)
    ids, labels = data.encode(tokenizer, long_row, max_length=64)
    assert ids == full[:64] and len(labels) == 64
    counts = data.count(tokenizer, [ROW, long_row], max_length=64)
    short = len(data.encode(tokenizer, ROW)[0])
    assert (counts.real_tokens, counts.cut_rows, counts.attn_sq) == (short + 64, 1, short ** 2 + 64 ** 2)


def test_eval_loss_equals_the_models_own_loss(tiny_model_dir, tokenizer):
    """Batched and padded, the eval loss is still the token mean of the model's own per-row losses."""
    from transformers import AutoModelForCausalLM

    rows = [ROW, {**ROW, "output": "Blue, or perhaps a deep green like the sea at dusk."}]
    loss, n = eval_loss.eval_loss(tiny_model_dir, None, rows, threads=1, batch_size=2)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    total, count = 0.0, 0
    for row in rows:
        ids, labels = data.encode(tokenizer, row)
        k = sum(1 for t in labels[1:] if t != -100)
        with torch.no_grad():
            total += float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss) * k
        count += k
    assert n == count
    assert loss == pytest.approx(total / count, rel=1e-5)


def test_flop_count_of_a_tiny_llama(tiny_model_dir):
    s = flops.shape(tiny_model_dir, rank=8)
    h, inter, kv, layers, vocab = 64, 128, 2 * 16, 2, 49152  # conftest's tiny Llama: 4 heads of 16, 2 kv heads
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * inter
    assert (s.layers, s.d_attn, s.n_block, s.n_head) == (layers, h, layers * per_layer, vocab * h)
    lora = layers * 8 * (2 * (h + h) + 2 * (h + kv) + 2 * (h + inter) + (inter + h))
    assert s.n_lora == lora
    got = flops.epoch_flops(s, real_tokens=100, supervised_tokens=40, attn_sq=5000)
    assert got == (4 * layers * per_layer + 6 * lora) * 100 + 12 * layers * h * 5000 + 4 * vocab * h * 40
    assert flops.mfu(got, 2.0, got) == 0.5 and flops.mfu(got, None, 1.0) is None


def test_ratios_against_hone_and_missing_values():
    rows = [{"tool": "hone", "train_s": 50.0, "real_tokens": 1000, "peak_rss_gib": 1.0},
            {"tool": "trl", "train_s": 100.0, "real_tokens": 1000, "peak_rss_gib": 4.0},
            {"tool": "swift", "train_s": None, "real_tokens": 1000, "peak_rss_gib": 0.5, "returncode": 1}]
    table.add_ratios(rows)
    assert [r["tokens_per_s"] for r in rows] == [20.0, 10.0, None]
    assert [r["speed_ratio"] for r in rows] == [1.0, 2.0, None]
    assert [r["rss_ratio"] for r in rows] == [1.0, 0.25, None]
    text = table.render(rows)
    swift_line = text.splitlines()[-1]
    assert "2.00x" in text and "0.25x" in text and swift_line.startswith("| swift") and " - |" in swift_line


def test_final_adapter_wins_over_checkpoints(tmp_path):
    for d in ("run/checkpoint-2", "run/checkpoint-10", "run"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "adapter_config.json").write_text("{}")
    assert tools.find_adapter(tmp_path / "run") == tmp_path / "run"
    (tmp_path / "run" / "adapter_config.json").unlink()
    assert tools.find_adapter(tmp_path / "run") == tmp_path / "run" / "checkpoint-10"
