"""The generation engine on a tiny model: whole and streamed output agree; finish reasons are right."""
from __future__ import annotations

from hone.config import GenCfg, ModelCfg
from hone.data.conversation import Message
from hone.infer.engine import TransformersEngine


def test_stream_equals_generate_and_length_reason(tiny_model_dir):
    engine = TransformersEngine.load(ModelCfg(model=str(tiny_model_dir)))
    msgs = [Message("user", "Who are you?")]
    gen = GenCfg(max_new_tokens=6)
    whole = engine.complete(msgs, gen)
    streamed = "".join(engine.stream(msgs, gen))
    assert streamed == whole.text
    assert whole.completion_tokens <= 6
    assert whole.finish_reason in ("length", "stop")
    ids = engine.prompt_ids(msgs)
    assert whole.prompt_tokens == len(ids)


def test_system_prompt_is_inserted(tiny_model_dir, tokenizer):
    engine = TransformersEngine.load(ModelCfg(model=str(tiny_model_dir), system="Be terse."))
    text = tokenizer.decode(engine.prompt_ids([Message("user", "hi")]))
    assert text.startswith("<|im_start|>system\nBe terse.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")


def test_chat_from_a_full_tuning_checkpoint(tiny_cfg):
    import hone

    res = hone.train({**tiny_cfg, "tuning": "full", "max_steps": 2, "save_steps": 2})
    ckpt = res.run_dir / "checkpoint-2"
    assert not (ckpt / "tokenizer_config.json").exists()  # checkpoints keep weights only
    engine = TransformersEngine.load(ModelCfg(), str(ckpt), model_given=False)
    assert engine.complete([Message("user", "hi")], GenCfg(max_new_tokens=3)).completion_tokens <= 3
