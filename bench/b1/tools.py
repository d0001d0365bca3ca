"""How each tool runs B1: the command line and config it gets, and where its results land afterwards.

Each `prepare_*` writes the tool's config into its own folder and returns the command; each `read_*` pulls the
train time, the final logged train loss, the adapter folder and (hone only) its memory estimate out of what
the tool wrote. Values a tool does not report come back as None.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data import MAX_LENGTH
from flops import LORA_TARGETS
from monitor import Finished

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@dataclass(frozen=True)
class Job:
    """B1's settings as every tool gets them."""
    rows: int
    batch: int = 4
    lr: float = 1e-4
    rank: int = 8
    alpha: int = 16
    seed: int = 42

    @property
    def steps(self) -> int:
        return -(-self.rows // self.batch)

    @property
    def logging_steps(self) -> int:
        # every tool logs at the same steps; with a short run the last step still gets logged
        return max(1, min(10, self.steps))


@dataclass
class Outcome:
    train_s: float | None = None
    train_s_source: str = "-"
    final_loss: float | None = None
    adapter: Path | None = None
    estimate: str | None = None      # hone's own memory estimate, as it worded it
    precision: str | None = None


def find_adapter(out: Path) -> Path | None:
    """The saved LoRA adapter under out: a final one (outside checkpoint-N folders) first, else the last
    checkpoint's."""
    found = sorted(p.parent for p in out.rglob("adapter_config.json"))
    final = [p for p in found if not any(part.startswith(("checkpoint-", "last-checkpoint"))
                                         for part in p.relative_to(out).parts)]
    if final:
        return final[0]
    def step(p: Path) -> int:
        m = re.search(r"checkpoint-(\d+)", str(p))
        return int(m.group(1)) if m else -1
    return max(found, key=step) if found else None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
    return out


# ---------------------------------------------------------------- hone

def prepare_hone(job: Job, out: Path, inputs: dict[str, Path], python: str) -> list[str]:
    cfg = {
        "template": "auto", "dataset": [str(inputs["alpaca"])], "val_size": 0,
        "max_length": MAX_LENGTH, "truncation_strategy": "right", "data_cache": False,
        "tuning": "lora", "lora_rank": job.rank, "lora_alpha": job.alpha, "lora_dropout": 0.0,
        "lora_target": list(LORA_TARGETS), "num_train_epochs": 1, "batch_size": job.batch,
        "gradient_accumulation_steps": 1, "learning_rate": job.lr, "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.0, "warmup_steps": 0, "weight_decay": 0.0, "seed": job.seed,
        "gradient_checkpointing": False, "eval_strategy": "no", "save_strategy": "no",
        "logging_steps": job.logging_steps, "report_to": ["none"], "plot_loss": False,
        "output_dir": str(out / "run"), "add_output_dir_suffix": False, "overwrite_output_dir": True,
    }
    path = out / "hone_b1.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return [python, "-m", "hone", "train", str(path)]


_RUNTIME_KEYS = ("train_runtime", "train_seconds", "train_time_s", "train_s", "runtime_s", "elapsed_s")


def _hone_estimate(records: list[dict[str, Any]], fin: Finished) -> str | None:
    """hone's memory estimate before the first step, wherever it put it: a metrics record or a log line."""
    for rec in records:  # hone writes {"kind": "estimate", "memory_estimate_gb": ...} before its first step
        if rec.get("kind") == "estimate" and isinstance(rec.get("memory_estimate_gb"), (int, float)):
            return f"{rec['memory_estimate_gb']:.2f} GiB"
    for _, line in fin.lines:
        if "estimate" in line.lower():
            m = re.search(r"(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB)", line)
            return f"{m.group(1)} {m.group(2)}" if m else line.strip()[:60]
    return None


def read_hone(job: Job, out: Path, fin: Finished) -> Outcome:
    run = out / "run"
    records = _jsonl(run / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "train"]
    o = Outcome(adapter=find_adapter(run), estimate=_hone_estimate(records, fin))
    logged = [r for r in train if r.get("step", 0) % job.logging_steps == 0 or r.get("step") == job.steps]
    if logged and isinstance(logged[-1].get("loss"), (int, float)):
        # hone writes every step's loss; average the last logging window, as Trainer-based tools log it
        window = [r["loss"] for r in train if r.get("step", 0) > logged[-1]["step"] - job.logging_steps]
        o.final_loss = sum(window) / len(window)
    for rec in reversed(records):
        for k in _RUNTIME_KEYS:
            if isinstance(rec.get(k), (int, float)):
                o.train_s, o.train_s_source = float(rec[k]), f"metrics.jsonl {k}"
                return o
    # no runtime record: from the line announcing the steps (just before the loop) to the last step's line
    start = fin.first_stamp("rows per step")
    end = fin.last_stamp(f"step {job.steps}/{job.steps}")
    if start is not None and end is not None and end > start:
        o.train_s, o.train_s_source = end - start, "log line times"
    return o


# ---------------------------------------------------------------- transformers Trainer + peft, TRL

def prepare_hf(job: Job, out: Path, inputs: dict[str, Path], python: str, model: Path) -> list[str]:
    return [python, str(HERE / "hf_train.py"), "--model", str(model), "--data", str(inputs["alpaca"]),
            "--out", str(out / "run"), *_common_args(job)]


def prepare_trl(job: Job, out: Path, inputs: dict[str, Path], python: str, model: Path) -> list[str]:
    return [python, str(HERE / "trl_train.py"), "--model", str(model), "--data", str(inputs["prompt_completion"]),
            "--out", str(out / "run"), "--max-length", str(MAX_LENGTH), *_common_args(job)]


def _common_args(job: Job) -> list[str]:
    return ["--batch", str(job.batch), "--lr", str(job.lr), "--rank", str(job.rank), "--alpha", str(job.alpha),
            "--seed", str(job.seed), "--logging-steps", str(job.logging_steps)]


def read_script(job: Job, out: Path, fin: Finished) -> Outcome:
    path = out / "run" / "b1_result.json"
    res = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return Outcome(train_s=res.get("train_runtime"), train_s_source="Trainer train_runtime",
                   final_loss=res.get("last_logged_loss"), adapter=find_adapter(out / "run"),
                   precision=res.get("precision"))


# ---------------------------------------------------------------- LLaMA-Factory

def prepare_llamafactory(job: Job, out: Path, inputs: dict[str, Path], python: str, model: Path) -> list[str]:
    cfg = {
        "model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "lora_rank": job.rank, "lora_alpha": job.alpha, "lora_dropout": 0.0, "lora_target": "all",
        "dataset": "b1_train", "dataset_dir": str(inputs["lf_info"].parent), "template": "smollm2",
        "default_system": SMOLLM_SYSTEM, "cutoff_len": MAX_LENGTH, "overwrite_cache": True,
        "output_dir": str(out / "run"), "overwrite_output_dir": True, "logging_steps": job.logging_steps,
        "save_strategy": "no", "plot_loss": False, "report_to": "none",
        "per_device_train_batch_size": job.batch, "gradient_accumulation_steps": 1, "learning_rate": job.lr,
        "num_train_epochs": 1.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.0, "weight_decay": 0.0,
        "seed": job.seed, "disable_gradient_checkpointing": True, "do_eval": False, "eval_strategy": "no",
        "dataloader_num_workers": 0,
    }
    path = out / "lf_b1.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    cli = str(Path(python).parent / "llamafactory-cli")
    return [cli, "train", str(path)]


def read_llamafactory(job: Job, out: Path, fin: Finished) -> Outcome:
    run = out / "run"
    res_path = run / "train_results.json"
    res = json.loads(res_path.read_text(encoding="utf-8")) if res_path.is_file() else {}
    logged = [r["loss"] for r in _jsonl(run / "trainer_log.jsonl") if isinstance(r.get("loss"), (int, float))]
    return Outcome(train_s=res.get("train_runtime"), train_s_source="train_results.json train_runtime",
                   final_loss=logged[-1] if logged else res.get("train_loss"), adapter=find_adapter(run))


# ---------------------------------------------------------------- ms-swift

def prepare_swift(job: Job, out: Path, inputs: dict[str, Path], python: str, model: Path) -> list[str]:
    cli = str(Path(python).parent / "swift")
    return [cli, "sft", "--model", str(model), "--model_type", "llama", "--template", "chatml",
            "--system", SMOLLM_SYSTEM, "--dataset", str(inputs["messages"]), "--split_dataset_ratio", "0",
            "--tuner_type", "lora", "--lora_rank", str(job.rank), "--lora_alpha", str(job.alpha),
            "--lora_dropout", "0", "--target_modules", "all-linear", "--max_length", str(MAX_LENGTH),
            "--truncation_strategy", "right", "--per_device_train_batch_size", str(job.batch),
            "--gradient_accumulation_steps", "1", "--learning_rate", str(job.lr), "--lr_scheduler_type", "cosine",
            "--warmup_ratio", "0", "--weight_decay", "0", "--num_train_epochs", "1", "--seed", str(job.seed),
            "--data_seed", str(job.seed), "--gradient_checkpointing", "false", "--eval_strategy", "no",
            "--logging_steps", str(job.logging_steps), "--report_to", "none", "--output_dir", str(out / "run"),
            "--add_version", "false", "--save_only_model", "true",
            "--dataloader_num_workers", "0", "--dataset_num_proc", "1"]


def read_swift(job: Job, out: Path, fin: Finished) -> Outcome:
    run = out / "run"
    records = [r for p in sorted(run.rglob("logging.jsonl")) for r in _jsonl(p)]
    logged = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]
    runtime = next((r for r in reversed(records) if "train_runtime" in r), {}).get("train_runtime")
    if isinstance(runtime, str):  # some versions log it as h:mm:ss
        parts = [float(x) for x in runtime.split(":")]
        runtime = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    return Outcome(train_s=runtime, train_s_source="logging.jsonl train_runtime",
                   final_loss=logged[-1] if logged else None, adapter=find_adapter(run))
