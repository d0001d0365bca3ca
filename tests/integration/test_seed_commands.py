"""The MAICA ms-swift command line (seed 000) runs as written with local data and a local model."""
from __future__ import annotations

import json
import shlex

import pytest

from hone.cli import _split_config
from hone.config import load_config, parse_cli_overrides

MAICA = """
--model_type {model} --model_revision master --sft_type lora --freeze_parameters 0 --tuner_backend peft
--template_type AUTO --dtype AUTO --output_dir {out} --ddp_backend nccl
--dataset {ds1} {ds2} {ds3} {ds4} {ds5}
--system None --val_dataset '{d}/moni_dataset.jsonl#50' --lora_rank 16 --lora_alpha 32 --lora_dropout_p 0.06
--train_dataset_sample -1 --num_train_epochs 8 --max_length 1500 --truncation_strategy delete
--check_dataset_strategy warning --lora_target_modules DEFAULT --gradient_checkpointing true --batch_size 1
--weight_decay 0.1 --learning_rate 1e-4 --gradient_accumulation_steps 16 --max_grad_norm 0.5 --warmup_ratio 0.03
--eval_steps 50 --save_steps 50 --save_total_limit -1 --logging_steps 5 --use_flash_attn true
--custom_dataset_info {d}/ds_info.json
"""


@pytest.fixture
def maica(tmp_path, tiny_model_dir):
    d = tmp_path / "dataset"
    d.mkdir()
    row = {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Monika."}]}
    for name in ("moni_dataset", "moni_dataset_en", "covid_new", "ds_new", "ms_bench", "roleplay"):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(row) for _ in range(2)) + "\n")
    (d / "ds_info.json").write_text(json.dumps({"roleplay-base": {"file_name": "roleplay.jsonl"}}))
    f = lambda n, k: " ".join([f"{d}/{n}.jsonl"] * k)  # noqa: E731
    cmd = MAICA.format(model=tiny_model_dir, out=tmp_path / "output", d=d, ds1=f("moni_dataset", 4),
                       ds2=f("moni_dataset_en", 2), ds3=f("covid_new", 4), ds4=f("ds_new", 6),
                       ds5=f"{d}/ms_bench.jsonl#3 roleplay-base#2")
    return shlex.split(cmd)


def test_maica_flags_parse_to_what_they_mean(maica):
    cfg = load_config(None, parse_cli_overrides(maica))
    t, tu, m, d = cfg.train, cfg.tune, cfg.model, cfg.data
    assert (tu.tuning, tu.lora_rank, tu.lora_alpha, tu.lora_dropout, tu.lora_target) == ("lora", 16, 32, 0.06,
                                                                                          ("DEFAULT",))
    assert tu.freeze_ratio is None and m.template == "auto" and m.dtype == "auto" and m.system is None
    assert m.attn_impl == "flash_attention_2" and t.ddp_backend == "nccl"
    assert len(d.dataset) == 18 and d.max_length == 1500 and d.train_sample == -1
    assert (t.num_train_epochs, t.batch_size, t.gradient_accumulation_steps, t.max_grad_norm) == (8, 1, 16, 0.5)
    assert (t.weight_decay, t.learning_rate, t.warmup_ratio, t.eval_steps, t.save_steps) == (0.1, 1e-4, 0.03, 50, 50)
    assert (t.save_total_limit, t.logging_steps, t.gradient_checkpointing) == (-1, 5, True)


def test_maica_command_trains_shortened(maica, capsys):
    from hone.cli import main

    # shortened, and without flash-attention, which needs a CUDA GPU this machine does not have
    assert main(["train", *maica, "--max_steps", "2", "--use_flash_attn", "false"]) == 0
    out = capsys.readouterr().out
    assert "best checkpoint:" in out and "checkpoint-2" in out
    assert _split_config(["train.yaml", "--x", "1"]) == ("train.yaml", ["--x", "1"])


# The seed's own lines, verbatim; the script passes them as `--dataset $ds1' '$ds2' '$ds3' '$ds4' '$ds5`.
SEED_LISTS = """\
ds1='dataset/moni_dataset.jsonl dataset/moni_dataset.jsonl dataset/moni_dataset.jsonl dataset/moni_dataset.jsonl'
ds2='dataset/moni_dataset_en.jsonl dataset/moni_dataset_en.jsonl'
ds3='dataset/covid_new.jsonl dataset/covid_new.jsonl dataset/covid_new.jsonl dataset/covid_new.jsonl'
ds4='dataset/ds_new.jsonl dataset/ds_new.jsonl dataset/ds_new.jsonl dataset/ds_new.jsonl dataset/ds_new.jsonl dataset/ds_new.jsonl'
ds5='iic/ms_bench#2500 HF::roleplay-base#1500 iic/MSAgent-MultiRole#1500 AI-ModelScope/ruozhiba#1000 modelscope/chinese-poetry-collection#500'
"""
SEED_ARG = "--dataset $ds1' '$ds2' '$ds3' '$ds4' '$ds5"


def shell_argv(script: str, cwd) -> list[str]:
    """The argv bash hands a program for `script`'s last line (NUL-separated, so nothing is re-split)."""
    import subprocess

    out = subprocess.run(["bash", "-c", script], cwd=cwd, check=True, capture_output=True)
    return out.stdout.decode().split("\0")[:-1]


def test_seed_dataset_lists_as_the_shell_expands_them(tmp_path, monkeypatch, tiny_model_dir, capsys):
    from hone.cli import main
    from hone.data.pipeline import dataset_specs, plan_sources

    argv = shell_argv(SEED_LISTS + f"printf '%s\\0' {SEED_ARG}", tmp_path)
    assert "dataset/moni_dataset.jsonl dataset/moni_dataset_en.jsonl" in argv  # the shell glued two paths
    values = parse_cli_overrides(argv)
    specs = dataset_specs(values["dataset"], {}, None)
    assert [s.target for s in specs] == (["dataset/moni_dataset.jsonl"] * 4 + ["dataset/moni_dataset_en.jsonl"] * 2
                                         + ["dataset/covid_new.jsonl"] * 4 + ["dataset/ds_new.jsonl"] * 6
                                         + ["iic/ms_bench", "roleplay-base", "iic/MSAgent-MultiRole",
                                            "AI-ModelScope/ruozhiba", "modelscope/chinese-poetry-collection"])
    assert [(s.count, s.hub) for s in specs[16:18]] == [(2500, None), (1500, "hf")]

    # with local copies standing in for the hub sets, the whole list resolves and reads
    d = tmp_path / "dataset"
    d.mkdir()
    row = {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "Monika."}]}
    for name in ("moni_dataset", "moni_dataset_en", "covid_new", "ds_new", "ms_bench"):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(row) for _ in range(3)) + "\n")
    local = SEED_LISTS.replace(SEED_LISTS.splitlines()[-1], "ds5='dataset/ms_bench.jsonl#2 dataset/ms_bench.jsonl'")
    argv = shell_argv(local + f"printf '%s\\0' {SEED_ARG} --max_length 1500", tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, parse_cli_overrides(argv))
    train, _ = plan_sources(cfg.data)
    assert len(train) == 18 and [s.count for s, _ in train][16:] == [2, None]
    assert all(src.files[0].is_file() for _, src in train)
    assert main(["data", "check", "--model", str(tiny_model_dir), *argv]) == 0
    assert "training rows     53" in capsys.readouterr().out  # 16 entries x 3 rows, then 2 + 3 of ms_bench


def test_an_existing_path_with_spaces_stays_one_entry(tmp_path):
    from hone.data.pipeline import dataset_specs

    p = tmp_path / "my data" / "chat log.jsonl"
    p.parent.mkdir()
    p.write_text("{}\n")
    assert [s.target for s in dataset_specs([f"{p}#3"], {}, None)] == [str(p)]
    assert [s.target for s in dataset_specs(["chat log.jsonl"], {}, str(p.parent))] == ["chat log.jsonl"]
    assert [s.target for s in dataset_specs(["my set"], {"my set": {}}, None)] == ["my set"]
