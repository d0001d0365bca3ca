"""The memory estimate printed before the first step: its activation term against what autograd really keeps,
the longest forward the data allows, and a run that cannot fit stopping before it starts."""
from __future__ import annotations

import collections

import pytest
import torch
from peft import LoraConfig, get_peft_model

from families import tiny_model
from hone.errors import TrainingError
from hone.training import memory


def _saved_bytes(model: torch.nn.Module, tokens: int) -> int:
    """Bytes of the distinct tensors autograd saves for backward during one forward of ``tokens`` tokens."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.requires_grad or t.grad_fn is not None or t.is_floating_point():
            seen[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(3, 1000, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, use_cache=False).logits[:, :8].float().sum()
    out.backward()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for (ptr, _), n in seen.items() if ptr not in params)


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
def test_activation_estimate_is_close_to_what_autograd_keeps(family):
    model = tiny_model(family, num_hidden_layers=4)
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.0))
    model.train()
    tokens = 256
    measured = _saved_bytes(model, tokens)
    est = tokens * memory.activation_bytes_per_token(model.get_base_model().config, torch.float32, False)
    assert 0.6 < est / measured < 1.5, (est, measured)


def test_longest_forward_follows_the_layout():
    lengths = [10, 300, 40, 500, 200]
    assert memory.tokens_per_forward(lengths, 4, packing=False, max_tokens=0) == 4 * 500
    assert memory.tokens_per_forward(lengths, 4, packing=True, max_tokens=0) == 500 + 300 + 200 + 40
    assert memory.tokens_per_forward(lengths, 4, packing=True, max_tokens=512) == 512
    assert memory.tokens_per_forward([900, 20], 4, packing=True, max_tokens=512) == 900  # a long row runs alone
    assert memory.tokens_per_forward([], 4, packing=True, max_tokens=512) == 0


def test_a_run_that_cannot_fit_stops_before_its_first_step(tiny_cfg, monkeypatch, tmp_path):
    import psutil

    import hone

    real = psutil.virtual_memory
    Mem = collections.namedtuple("Mem", "available total")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem(1 << 20, real().total))  # 1 MiB free
    with pytest.raises(TrainingError, match=r"needs about .* GiB but .* is available.*max_forward_tokens \(now "
                                            r"1024\).*gradient_checkpointing: true.*check_memory: false"):
        hone.train({**tiny_cfg, "output_dir": str(tmp_path / "out")})
    assert not list((tmp_path / "out").glob("checkpoint-*"))
    res = hone.train({**tiny_cfg, "output_dir": str(tmp_path / "anyway"), "check_memory": False, "max_steps": 1})
    assert res.global_step == 1


def test_the_estimate_is_logged_and_recorded(tiny_cfg, tmp_path, caplog):
    import json

    import hone

    caplog.set_level("INFO", logger="hone")
    res = hone.train({**tiny_cfg, "output_dir": str(tmp_path / "out"), "max_steps": 1})
    assert any("memory estimate" in r.getMessage() and "available" in r.getMessage() for r in caplog.records)
    recs = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    est = [r for r in recs if r["kind"] == "estimate"]
    assert len(est) == 1 and est[0]["memory_estimate_gb"] > est[0]["held_gb"] > 0
