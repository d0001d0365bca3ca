"""The training loop, written out once. Every method (lora, qlora, full, freeze) runs through it unchanged."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import RunCfg, dump_yaml, to_dict
from ..config_derive import eval_batch_size, method, quant_bits, report_to, save_steps
from ..data.collate import collate
from ..data.encode import IGNORE_INDEX, Encoded
from ..data.pipeline import PreparedData, prepare
from ..errors import CheckpointError, TrainingError
from ..models.adapters import add_neftune, make_trainable
from ..models.load import choose_precision, load_model, load_tokenizer, resolve_model
from ..templates import get_template
from . import checkpoint as ckpt
from .logging import MetricsLog, Progress, plot_loss
from .loss import CausalLMLoss
from .schedule import BatchPlan
from .setup import (build_optimizer, build_scheduler, ensure_writable, latest_run_dir, make_accelerator, new_run_dir,
                    seed_everything)

log = logging.getLogger("hone")

RUN_INFO = "hone_run.json"


@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    train_losses: list[float] = field(default_factory=list)
    eval_loss: float | None = None


def train(cfg: RunCfg) -> TrainResult:
    """Fine-tune ``cfg.model.model`` on ``cfg.data`` and return where the results are."""
    precision = choose_precision(cfg.model.dtype)
    acc = make_accelerator(cfg, precision.mixed)
    rank, world = acc.process_index, acc.num_processes
    seed_everything(cfg.train.seed + rank)

    with acc.main_process_first():
        model_dir = resolve_model(cfg.model.model, revision=cfg.model.model_revision, token=cfg.model.hub_token)
    tokenizer = load_tokenizer(model_dir, cfg.model)
    template = get_template(cfg.model.template, tokenizer)
    data = prepare(cfg, tokenizer, template)  # every data error surfaces here, before the model loads

    run_dir, resume_from = _run_dir_and_resume(cfg, acc)
    plan = BatchPlan(len(data.train), cfg.train.batch_size, world, cfg.train.gradient_accumulation_steps,
                     cfg.train.seed, cfg.train.max_steps, cfg.train.num_train_epochs)
    state = _resume_state(cfg, resume_from, plan, data)

    model = load_model(model_dir, cfg.model, precision, quant_bits=quant_bits(cfg))
    model = make_trainable(model, cfg)
    if resume_from is not None:
        _load_weights(model, resume_from.path)
    if cfg.tune.neftune_alpha > 0:
        add_neftune(model, cfg.tune.neftune_alpha)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, plan.total_steps)
    module, optimizer = acc.prepare(CausalLMLoss(model), optimizer)
    if resume_from is not None and not cfg.train.resume_weights_only:
        optimizer.load_state_dict(ckpt.load_tensors(resume_from.path / ckpt.OPTIMIZER))
        scheduler.load_state_dict(json.loads((resume_from.path / ckpt.SCHEDULER).read_text()))
        tensors = ckpt.load_tensors(resume_from.path / ckpt.RNG)
        ckpt.set_rng_state({k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"rank{rank}.")},
                           state["rng"][str(rank)])
    elif resume_from is not None:
        log.warning("resuming from weights only: optimizer moments, learning-rate schedule and data position "
                    "start over (warmup runs again)")
        state = _fresh_state(plan, data)

    if acc.is_main_process:
        (run_dir / "hone_config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        _write_run_info(run_dir, cfg, model_dir, state)
        log.info("run directory: %s", run_dir)
        log.info("%d training rows, %d validation rows; %d steps (%d per epoch), %d rows per step",
                 len(data.train), len(data.val), plan.total_steps, plan.steps_per_epoch, plan.rows_per_step)

    metrics = MetricsLog(run_dir, report_to(cfg), cfg.train.logging_dir, to_dict(cfg), enabled=acc.is_main_process)
    progress = Progress(plan.total_steps, state["global_step"], enabled=acc.is_main_process)
    pad_id = tokenizer.pad_token_id
    params = [p for p in module.parameters() if p.requires_grad]
    every_save = save_steps(cfg)
    nonfinite = 0
    order_epoch, order = -1, []
    tokens_seen, t_start = 0, time.monotonic()
    module.train()

    step = state["global_step"]
    while step < plan.total_steps:
        epoch, _ = plan.position(step)
        if epoch != order_epoch:
            order_epoch, order = epoch, plan.order(epoch)
        batches = [_batch([data.train[i] for i in mb], pad_id, cfg.data.packing, data.train[0])
                   for mb in plan.micro_batches(step, rank, order)]
        n_local = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        n_total = int(acc.reduce(torch.tensor(n_local, device=acc.device), reduction="sum"))
        loss_sum = torch.zeros((), device=acc.device)
        for i, batch in enumerate(batches):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            sync = acc.no_sync(module) if i < len(batches) - 1 else _null()
            with sync:
                part, _ = module(**batch)
                acc.backward(part * (world / max(1, n_total)))
            loss_sum += part.detach().float()
        step_loss = float(acc.reduce(loss_sum, reduction="sum")) / max(1, n_total)
        grad_norm = acc.clip_grad_norm_(params, cfg.train.max_grad_norm or float("inf"))
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        if not (math.isfinite(step_loss) and (math.isfinite(grad_norm) or precision.mixed == "fp16")):
            nonfinite += 1
            optimizer.zero_grad(set_to_none=True)
            metrics.write({"kind": "train", "step": step + 1, "loss": step_loss, "grad_norm": grad_norm,
                           "skipped": True})
            if nonfinite >= cfg.train.max_nonfinite_steps:
                raise TrainingError(f"the loss or gradient is not finite at step {step + 1} ({step_loss}, grad norm "
                                    f"{grad_norm}) for {nonfinite} step(s) in a row; stopped. The last good "
                                    "checkpoint is kept. Lower learning_rate, or check the data")
            step += 1
            continue
        nonfinite = 0
        optimizer.step()
        if not acc.optimizer_step_was_skipped:  # fp16 overflow: the scaler skipped it, so does the schedule
            scheduler.step()
        else:
            state["skipped_steps"] = state.get("skipped_steps", 0) + 1
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                           for b in batches) * world
        state["global_step"], state["epoch"] = step, step / plan.steps_per_epoch
        state["losses"].append(step_loss)
        record = {"kind": "train", "step": step, "epoch": round(state["epoch"], 4), "loss": step_loss,
                  "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "tokens": n_total,
                  "tokens_per_s": tokens_seen / max(1e-9, time.monotonic() - t_start),
                  "memory_gb": _memory_gb(acc.device)}
        metrics.write(record)
        progress.update(step, record, force=step % cfg.train.logging_steps == 0 or step == plan.total_steps)

        last = step == plan.total_steps
        if data.val and (_due(cfg.train.eval_strategy, step, cfg.train.eval_steps, plan) or last):
            ev = evaluate(module, data.val, acc, eval_batch_size(cfg), pad_id)
            state["eval_history"].append({"step": step, "eval_loss": ev})
            metrics.write({"kind": "eval", "step": step, "eval_loss": ev, "eval_ppl": math.exp(min(ev, 50))})
            if acc.is_main_process:
                log.info("step %d: eval_loss %.4f (perplexity %.2f)", step, ev, math.exp(min(ev, 50)))
            if state["best_metric"] is None or ev < state["best_metric"]:
                state["best_metric"], state["best_step"], state["bad_evals"] = ev, step, 0
            else:
                state["bad_evals"] += 1
            patience = cfg.train.early_stopping_patience
            if patience and state["bad_evals"] >= patience:
                log.info("early stopping: no better eval loss in %d evaluations", patience)
                last = True
        if cfg.train.save_strategy != "no" and (_due(cfg.train.save_strategy, step, every_save, plan) or last):
            _save(acc, module, model, tokenizer, optimizer, scheduler, state, run_dir, cfg)
        if last:
            break
    progress.close()
    metrics.close()
    return _finish(acc, model, tokenizer, run_dir, cfg, state, model_dir)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _batch(rows: list[Encoded], pad_id: int, packing: bool, filler: Encoded) -> dict[str, torch.Tensor]:
    if rows:
        return collate(rows, pad_id, packing)
    dummy = Encoded(filler.input_ids[:8], [IGNORE_INDEX] * len(filler.input_ids[:8]))
    return collate([dummy], pad_id, packing)  # a process with no row this micro-step: zero loss, same collectives


def _due(strategy: str, step: int, every: int, plan: BatchPlan) -> bool:
    if strategy == "no":
        return False
    if strategy == "epoch":
        return step % plan.steps_per_epoch == 0
    return step % every == 0


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    except (ImportError, OSError):
        return 0.0


@torch.no_grad()
def evaluate(module: Any, rows: list[Encoded], acc: Any, batch_size: int, pad_id: int) -> float:
    """Mean token loss over the validation rows (each process takes its share)."""
    module.eval()
    total = torch.zeros(2, device=acc.device, dtype=torch.float64)
    mine = rows[acc.process_index::acc.num_processes]
    for i in range(0, len(mine), batch_size):
        batch = {k: v.to(acc.device) for k, v in collate(mine[i:i + batch_size], pad_id).items()}
        loss, n = module(**batch)
        total += torch.tensor([float(loss), n], device=acc.device, dtype=torch.float64)
    total = acc.reduce(total, reduction="sum")
    module.train()
    return float(total[0] / max(1.0, float(total[1])))


def _fresh_state(plan: BatchPlan, data: PreparedData) -> dict[str, Any]:
    return {"global_step": 0, "epoch": 0.0, "total_steps": plan.total_steps, "losses": [], "eval_history": [],
            "best_metric": None, "best_step": None, "bad_evals": 0, "fingerprint": data.fingerprint,
            "rows": plan.n_rows, "batch_size": plan.batch_size, "gradient_accumulation_steps": plan.accum,
            "world_size": plan.world, "max_steps": plan.max_steps, "num_train_epochs": plan.epochs,
            "seed": plan.seed}


_MUST_MATCH = (("fingerprint", "training data"), ("batch_size", "batch_size"),
               ("gradient_accumulation_steps", "gradient_accumulation_steps"), ("world_size", "process count"),
               ("max_steps", "max_steps"), ("num_train_epochs", "num_train_epochs"), ("seed", "seed"))


def _resume_state(cfg: RunCfg, found: ckpt.Checkpoint | None, plan: BatchPlan, data: PreparedData) -> dict[str, Any]:
    fresh = _fresh_state(plan, data)
    if found is None:
        return fresh
    saved = ckpt.load_state(found, weights_only=cfg.train.resume_weights_only)
    if cfg.train.resume_weights_only:
        return fresh
    changed = [f"{label}: {saved.get(k)} -> {fresh[k]}" for k, label in _MUST_MATCH if saved.get(k) != fresh[k]]
    if changed and not cfg.train.resume_ignore_changes:
        raise CheckpointError(f"cannot resume {found.path} exactly; the run changed since it was saved:\n  "
                              + "\n  ".join(changed) + "\nRestore those settings, or set resume_ignore_changes: "
                              "true to resume anyway")
    if saved["global_step"] >= plan.total_steps:
        raise CheckpointError(f"{found.path} is the end of a finished run (step {saved['global_step']} of "
                              f"{plan.total_steps}); there is nothing left to train. Raise max_steps or "
                              "num_train_epochs (with resume_ignore_changes: true) to train further")
    log.info("resuming from %s (step %d)", found.path, saved["global_step"])
    return {**fresh, **{k: v for k, v in saved.items() if k not in ("total_steps",)}}


def _run_dir_and_resume(cfg: RunCfg, acc: Any) -> tuple[Path, ckpt.Checkpoint | None]:
    """Pick the run directory (the same on every process) and the checkpoint to resume from."""
    from accelerate.utils import broadcast_object_list

    ref = cfg.train.resume_from_checkpoint
    holder: list[Any] = [None]
    if acc.is_main_process:
        if ref and ref.lower() == "auto":
            run_dir = latest_run_dir(cfg)
            found = ckpt.find("auto", run_dir) if run_dir else None
            if found is None:
                log.info("resume_from_checkpoint auto: no checkpoint yet; starting fresh")
                run_dir = new_run_dir(cfg)
        elif ref:
            found = ckpt.find(ref, Path(ref))
            run_dir = found.path.parent
        else:
            found, run_dir = None, new_run_dir(cfg)
        ensure_writable(run_dir)
        ckpt.sweep_staging(run_dir)
        holder = [(str(run_dir), (str(found.path), found.step) if found else None)]
    holder = broadcast_object_list(holder) if acc.num_processes > 1 else holder
    run_dir_s, found_t = holder[0]
    return Path(run_dir_s), (ckpt.Checkpoint(Path(found_t[0]), found_t[1]) if found_t else None)


def _save_weights(model: Any, folder: Path, tokenizer: Any = None) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def _load_weights(model: Any, folder: Path) -> None:
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    from transformers.modeling_utils import load_sharded_checkpoint

    if (folder / "model.safetensors").is_file():
        missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
        tied = {k for k in missing if "lm_head" in k or "embed" in k}
        if set(missing) - tied or unexpected:
            raise CheckpointError(f"{folder}: weights do not match the model (missing {sorted(missing)[:3]}, "
                                  f"unexpected {sorted(unexpected)[:3]})")
        return
    if (folder / "model.safetensors.index.json").is_file():
        load_sharded_checkpoint(model, folder, strict=False)
        return
    raise CheckpointError(f"{folder} holds no weights (adapter_model.safetensors or model.safetensors)")


def _save(acc: Any, module: Any, model: Any, tokenizer: Any, optimizer: Any, scheduler: Any,
          state: dict[str, Any], run_dir: Path, cfg: RunCfg) -> None:
    from accelerate.utils import gather_object

    rngs = gather_object([(acc.process_index, ckpt.rng_state())])
    if acc.is_main_process:
        best = run_dir / f"checkpoint-{state['best_step']}" if state.get("best_step") else None
        path = ckpt.save(run_dir, state["global_step"], save_weights=lambda d: _save_weights(acc.unwrap_model(module).model, d),
                         optimizer=optimizer, scheduler=scheduler, state={k: v for k, v in state.items() if k != "rng"},
                         rank_rng=dict(rngs), weights_only=cfg.train.only_save_model)
        state["last_checkpoint"] = str(path)
        ckpt.rotate(run_dir, cfg.train.save_total_limit, best if best and best.exists() else None)
    acc.wait_for_everyone()


def _write_run_info(run_dir: Path, cfg: RunCfg, model_dir: Path, state: dict[str, Any]) -> None:
    info = {"model": cfg.model.model, "model_dir": str(model_dir), "template": cfg.model.template,
            "system": cfg.model.system, "method": method(cfg), "global_step": state.get("global_step", 0),
            "best_checkpoint": state.get("best_checkpoint"), "last_checkpoint": state.get("last_checkpoint")}
    (run_dir / RUN_INFO).write_text(json.dumps(info, indent=1))


def _finish(acc: Any, model: Any, tokenizer: Any, run_dir: Path, cfg: RunCfg, state: dict[str, Any],
            model_dir: Path) -> TrainResult:
    last = Path(state["last_checkpoint"]) if state.get("last_checkpoint") else None
    best = run_dir / f"checkpoint-{state['best_step']}" if state.get("best_step") else last
    if best is not None and not best.exists():
        best = last
    if acc.is_main_process:
        _save_weights(acc.unwrap_model(model), run_dir, tokenizer)
        state["best_checkpoint"] = str(best) if best else None
        _write_run_info(run_dir, cfg, model_dir, state)
        if cfg.train.plot_loss:
            plot_loss(run_dir)
        log.info("done: %d steps; final weights in %s%s", state["global_step"], run_dir,
                 f"; best checkpoint {best}" if best else "")
    acc.wait_for_everyone()
    ev = state["eval_history"][-1]["eval_loss"] if state["eval_history"] else None
    return TrainResult(run_dir, state["global_step"], best, last, list(state["losses"]), ev)
