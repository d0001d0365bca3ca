"""The training loop, written out once. Every method (lora, qlora, full, freeze) runs through it unchanged."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import allocator, atomic, runs
from ..config import RunCfg, changed_keys, dump_yaml, to_dict
from ..config.derive import eval_batch_size, quant_bits, report_to, save_steps
from ..data.encode import Encoded
from ..data.pipeline import prepare
from ..errors import CheckpointError, TrainingError
from ..models.adapters import add_neftune, keep_input_dtype, make_trainable
from ..models.attention import use_row_attention
from ..models.fused_lora import fuse_lora
from ..models.load import Precision, choose_precision, load_model, load_tokenizer, model_type, resolve_model
from ..models.registry import LossFamily
from ..templates import get_template
from . import checkpoint as ckpt, memory, trace
from .guard import NonFiniteGuard
from .logging import MetricsLog, Progress, plot_loss
from .loss import loss_family
from .objective import SFT, Objective
from .record import run_record
from .schedule import BatchPlan
from .setup import build_optimizer, build_scheduler, make_accelerator, seed_everything
from .state import (TrainState, load_weights, resume_state, run_dir_and_resume, save_checkpoint, save_weights,
                    warn_differences, write_run_info)

log = logging.getLogger("hone")


@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    best_checkpoint: Path | None
    last_checkpoint: Path | None
    train_losses: list[float] = field(default_factory=list)
    eval_loss: float | None = None


def train(cfg: RunCfg, repeat_of: Path | None = None) -> TrainResult:
    """Fine-tune ``cfg.model.model`` on ``cfg.data`` and return where the results are; ``repeat_of``: the run
    whose saved config this is (what differs from its record is listed in a warning)."""
    with flush_denormals(not torch.cuda.is_available()):
        return _train(cfg, repeat_of)


@contextlib.contextmanager
def flush_denormals(on: bool = True) -> Iterator[None]:
    """CPU floats below 1.2e-38 read and written as zero while training (the CPU's FTZ/DAZ modes).

    x86 CPUs compute with such subnormal numbers in slow microcode; softmax and exp kernels meet them where
    scores lie far apart. Quickstart runs alternating with and without (2 epochs, three pairs): 350/397/388
    against 336/340/373 tokens/s. The mode is per thread and only threads started later inherit it: `hone
    train` sets it before torch's intra-op pool starts (``cli.entry``); here, called in-process, it covers
    this thread and the caller's setting comes back afterwards.
    """
    was = float(torch.tensor([1e-39]).mul(1.0)) == 0.0  # already flushing on this thread
    if on and not was:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if on and not was:
            torch.set_flush_denormal(False)


def _train(cfg: RunCfg, repeat_of: Path | None) -> TrainResult:
    precision = choose_precision(cfg.model.dtype, train=True)
    acc = make_accelerator(cfg, precision.mixed)
    rank, world, accum = acc.process_index, acc.num_processes, cfg.train.gradient_accumulation_steps
    seed_everything(cfg.train.seed + rank)

    with acc.main_process_first():
        model_dir = resolve_model(cfg.model.model, revision=cfg.model.model_revision, token=cfg.model.hub_token)
    family = loss_family(model_type(model_dir), cfg.model.full_forward_loss)  # an uncovered family stops here
    tokenizer = load_tokenizer(model_dir, cfg.model)
    template = get_template(cfg.model.template, tokenizer)
    data = prepare(cfg, tokenizer, template)  # every data error surfaces here, before the model loads

    run_dir, resume_from = run_dir_and_resume(cfg, acc)
    plan = BatchPlan(len(data.train), cfg.train.batch_size, world, accum, cfg.train.seed, cfg.train.max_steps,
                     cfg.train.num_train_epochs)
    state = resume_state(cfg, resume_from, plan, data)
    exact_resume = resume_from is not None and not cfg.train.resume_weights_only
    packing, max_tokens = layout(cfg, family, acc)
    objective: Objective = SFT(tokenizer.pad_token_id, packing, data.train[0], cfg.model.full_forward_loss,
                               max_tokens)

    model = training_model(model_dir, cfg, precision, packing)
    if resume_from is not None:
        load_weights(model, resume_from.path)
    if cfg.tune.neftune_alpha > 0:
        add_neftune(model, cfg.tune.neftune_alpha)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, plan.total_steps)
    module, optimizer = acc.prepare(objective.loss_module(model), optimizer)
    if exact_resume:
        _restore(resume_from.path, optimizer, scheduler, state, rank)
    need = memory.estimate(model, [len(r.input_ids) for r in data.train], cfg.train.batch_size, packing, max_tokens,
                           precision.compute, cfg.train.gradient_checkpointing, acc.device)
    memory.check(need, cfg.train.check_memory, max_tokens, say=acc.is_main_process)  # every process stops alike

    run_info: dict[str, Any] = {}  # hone_run.json's record: the main process writes it
    if acc.is_main_process:
        atomic.write_text(run_dir / "hone_config.yaml", dump_yaml(cfg))
        log.info("config (keys set; every key in %s):\n%s", run_dir / "hone_config.yaml",
                 "\n".join(f"  {k}: {v}" for k, v in changed_keys(cfg).items()))
        run_info = run_record(cfg, model_dir, template, data)
        warn_differences(run_info, run_dir if resume_from is not None else repeat_of,
                         "resumes" if resume_from is not None else "repeats")
        write_run_info(run_dir, run_info, state)
        log.info("run directory: %s", run_dir)
        log.info("precision: %s", precision.reason)
        log.info("memory allocator: %s", allocator.active() or "the C library's (an installed jemalloc or "
                 "tcmalloc lowers the peak: `hone train` preloads it by itself)")
        log.info("%d training rows, %d validation rows; %d steps (%d per epoch), %d rows per step",
                 len(data.train), len(data.val), plan.total_steps, plan.steps_per_epoch, plan.rows_per_step)

    metrics = MetricsLog(run_dir, report_to(cfg), cfg.train.logging_dir, to_dict(cfg), enabled=acc.is_main_process,
                         resume_step=state.global_step if resume_from is not None else None)
    metrics.write({**need.record(), "step": state.global_step})
    progress = Progress(plan.total_steps, state.global_step, enabled=acc.is_main_process)
    params = [p for p in module.parameters() if p.requires_grad]
    guard, order_epoch, order = NonFiniteGuard(cfg.train.max_nonfinite_steps), -1, []
    tokens_seen, t_start, tracing = 0, time.monotonic(), trace.enabled()
    module.train()

    step = state.global_step
    while step < plan.total_steps:
        epoch, _ = plan.position(step)
        if epoch != order_epoch:
            order_epoch, order = epoch, plan.order(epoch)
        batches = [b for mb in plan.micro_batches(step, rank, order)
                   for b in objective.batches([data.train[i] for i in mb])]
        if max_tokens and world > 1:  # every process runs as many forwards (collectives pair up), idle ones empty
            most = int(acc.gather(torch.tensor([len(batches)], device=acc.device)).max())
            batches += [objective.batch([]) for _ in range(most - len(batches))]
        n_local = sum(objective.count(b) for b in batches)
        n_total = int(acc.reduce(torch.tensor(n_local, device=acc.device), reduction="sum"))
        # accelerate divides by `accum` and DDP / DeepSpeed average over processes: undo both, so the gradient
        # is the loss summed over the whole accumulated global batch divided by its supervised tokens
        scale = world * accum / max(1, n_total)
        loss_sum = torch.zeros((), device=acc.device)
        fed: list[str] = []
        for i, batch in enumerate(batches):
            if tracing:
                fed += trace.rows_fed(batch)
            with _gradient_sync(acc, module, bool(max_tokens), last=i == len(batches) - 1):
                part, _ = module(**{k: v.to(acc.device) for k, v in batch.items()})
                acc.backward(part * scale)
            loss_sum += part.detach().float()
        step_loss = float(acc.reduce(loss_sum, reduction="sum")) / max(1, n_total)
        norm = acc.clip_grad_norm_(params, cfg.train.max_grad_norm or float("inf"))
        grad_norm = float(norm) if norm is not None else None
        fp16 = precision.mixed == "fp16"  # the loss scaler, not this check, handles fp16 gradient overflow
        scaler_skipped = False
        if math.isfinite(step_loss) and (grad_norm is None or math.isfinite(grad_norm) or fp16):
            optimizer.step()
            scaler_skipped = acc.optimizer_step_was_skipped
            if not scaler_skipped:  # an fp16 overflow skips the step, so the schedule does not advance either
                scheduler.step()
        skipped = guard.observe(loss=step_loss, grad_norm=grad_norm, fp16=fp16, scaler_skipped=scaler_skipped,
                                loss_scale=_loss_scale(acc))
        if skipped:
            state.skipped_steps += 1
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens_seen += sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                           for b in batches) * world
        state.global_step, state.epoch = step, step / plan.steps_per_epoch
        state.losses.append(step_loss)
        record = {"kind": "train", "step": step, "epoch": round(state.epoch, 4), "loss": step_loss,
                  "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "tokens": n_total,
                  "tokens_per_s": tokens_seen / max(1e-9, time.monotonic() - t_start),
                  "memory_gb": _memory_gb(acc.device), "rows": plan.step_rows(step - 1, order)}
        if skipped:
            record["skipped"] = True
        if tracing:
            record["fed"] = fed
        metrics.write(record)
        progress.update(step, record, force=step % cfg.train.logging_steps == 0 or step == plan.total_steps)
        if guard.stop:
            metrics.close()
            raise TrainingError(f"{guard.last_reason} at step {step} (loss {step_loss}, grad norm {grad_norm}) for "
                                f"{guard.in_a_row} step(s) in a row; stopped. The last good "
                                f"checkpoint is kept ({state.last_checkpoint or 'none saved yet'}). Lower "
                                "learning_rate, or check the data")

        last = step == plan.total_steps
        if data.val and cfg.train.eval_strategy != "no" and (_due(cfg.train.eval_strategy, step,
                                                                 cfg.train.eval_steps, plan) or last):
            last = _evaluate_and_track(module, objective, data.val, acc, cfg, step, state, metrics) or last
        if cfg.train.save_strategy != "no" and (_due(cfg.train.save_strategy, step, save_steps(cfg), plan) or last):
            save_checkpoint(acc, acc.unwrap_model(module).model, optimizer, scheduler, state, run_dir, cfg)
        if last:
            break
    progress.close()
    metrics.write({"kind": "summary", "step": step, "train_runtime": round(time.monotonic() - t_start, 3),
                   "train_tokens": tokens_seen, "peak_memory_gb": _memory_gb(acc.device)})
    metrics.close()
    return _finish(acc, model, tokenizer, run_dir, cfg, state, run_info)


def training_model(model_dir: Path, cfg: RunCfg, precision: Precision, packing: bool) -> Any:
    """The model as training runs it: loaded, made trainable for the configured method, and set up for this
    precision and row layout."""
    model = make_trainable(load_model(model_dir, cfg.model, precision, quant_bits=quant_bits(cfg)), cfg)
    if precision.mixed != "no":
        keep_input_dtype(model)
    if precision.device == "cpu":  # LoRA layers' adapter work folded into the base matmuls (measured on CPU)
        fuse_lora(model)
    if packing:  # on a CPU, packed rows attend one row at a time instead of through a whole-sequence mask
        use_row_attention(model, precision.compute)
    return model


CPU_FORWARD_TOKENS = 1024
"""`max_forward_tokens: 0` (auto) on a CPU."""


def layout(cfg: RunCfg, family: LossFamily | None, acc: Any) -> tuple[bool, int]:
    """Whether training rows are packed, and the most tokens per forward (0: a micro-batch is one forward)."""
    if not cfg.data.packing:
        return False, 0
    if family is None:  # the model's own forward: its attention is not known to honour position-id resets
        log.info("packing is off: it is used only with the model families hone's fast loss covers; rows are padded")
        return False, 0
    wanted = cfg.data.max_forward_tokens
    if acc.state.deepspeed_plugin is not None:  # DeepSpeed counts forwards to find the accumulation boundary
        if wanted:
            log.warning("max_forward_tokens is ignored under DeepSpeed: each micro-batch is one forward")
        return True, 0
    if wanted:
        return True, wanted
    # Auto: on a CPU, each forward pays once for reading every weight, so longer ones run faster up to about a
    # thousand tokens (bench/b1/forward_tokens.py: 256 < 512 < 1024 ~ whole), while activation memory keeps
    # growing with the length. A GPU gains from the whole micro-batch at once. The router's balancing loss is
    # per forward, so MoE micro-batches stay whole unless asked otherwise.
    if acc.device.type == "cpu" and not family.router_aux:
        return True, CPU_FORWARD_TOKENS
    return True, 0


def _gradient_sync(acc: Any, module: Any, split: bool, last: bool) -> Any:
    """The context one forward/backward runs in. Whole micro-batches: accelerate's accumulation (it counts
    them). Split ones: gradients stay local until the step's last forward, which synchronises them."""
    if not split:
        return acc.accumulate(module)
    return contextlib.nullcontext() if last else acc.no_sync(module)


def _restore(path: Path, optimizer: Any, scheduler: Any, state: TrainState, rank: int) -> None:
    """Optimizer moments, schedule position and this process's RNG streams, as the checkpoint saved them."""
    optimizer.load_state_dict(ckpt.load_tensors(path / ckpt.OPTIMIZER))
    try:
        scheduler.load_state_dict(json.loads((path / ckpt.SCHEDULER).read_text()))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / ckpt.SCHEDULER}: cannot read it ({e})") from None
    tensors = ckpt.load_tensors(path / ckpt.RNG)
    mine = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"rank{rank}.")}
    if mine and str(rank) in state.rng:
        ckpt.set_rng_state(mine, state.rng[str(rank)])
    else:
        log.warning("%s has no RNG state for process %d; its dropout noise will differ from an uninterrupted run",
                    path, rank)


def _evaluate_and_track(module: Any, objective: Objective, rows: list[Encoded], acc: Any, cfg: RunCfg, step: int,
                        state: TrainState, metrics: MetricsLog) -> bool:
    """Evaluate, log loss and perplexity, track the best; True when early stopping says stop."""
    ev = evaluate(module, objective, rows, acc, eval_batch_size(cfg))
    ppl = math.exp(min(ev, 50))
    state.eval_history.append({"step": step, "eval_loss": ev})
    metrics.write({"kind": "eval", "step": step, "eval_loss": ev, "eval_ppl": ppl})
    if acc.is_main_process:
        log.info("step %d: eval_loss %.4f (perplexity %.2f)", step, ev, ppl)
    if state.best_metric is None or ev < state.best_metric:
        state.best_metric, state.best_step, state.bad_evals = ev, step, 0
    else:
        state.bad_evals += 1
    patience = cfg.train.early_stopping_patience
    if patience and state.bad_evals >= patience:
        if acc.is_main_process:
            log.info("early stopping at step %d: no better eval loss in %d evaluations", step, patience)
        return True
    return False


def _due(strategy: str, step: int, every: int, plan: BatchPlan) -> bool:
    if strategy == "no":
        return False
    if strategy == "epoch":
        return step % plan.steps_per_epoch == 0
    return step % every == 0


def _loss_scale(acc: Any) -> float | None:
    scaler = getattr(acc, "scaler", None)
    return float(scaler.get_scale()) if scaler is not None else None


def _memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    except (ImportError, OSError):
        return 0.0


@torch.no_grad()
def evaluate(module: Any, objective: Objective, rows: list[Encoded], acc: Any, batch_size: int) -> float:
    """Mean token loss over the validation rows; each process takes its share in the same number of passes."""
    module.eval()
    total = torch.zeros(2, device=acc.device, dtype=torch.float64)
    mine = rows[acc.process_index::acc.num_processes]
    n_batches = math.ceil(math.ceil(len(rows) / acc.num_processes) / batch_size)
    for i in range(n_batches):
        batch = objective.batch(mine[i * batch_size:(i + 1) * batch_size], train=False)
        loss, n = module(**{k: v.to(acc.device) for k, v in batch.items()})
        total += torch.tensor([float(loss), n], device=acc.device, dtype=torch.float64)
    total = acc.reduce(total, reduction="sum")
    module.train()
    return float(total[0] / max(1.0, float(total[1])))


def _finish(acc: Any, model: Any, tokenizer: Any, run_dir: Path, cfg: RunCfg, state: TrainState,
            run_info: dict[str, Any]) -> TrainResult:
    last = Path(state.last_checkpoint) if state.last_checkpoint else None
    best = run_dir / f"checkpoint-{state.best_step}" if state.best_step else last
    if best is not None and not best.exists():
        best = last
    if acc.is_main_process:
        runs.write_final(run_dir, lambda d: save_weights(acc.unwrap_model(model), d, tokenizer))
        state.best_checkpoint = str(best) if best else None
        write_run_info(run_dir, run_info, state)
        if cfg.train.plot_loss:
            plot_loss(run_dir)
        log.info("done: %d steps; final weights in %s%s", state.global_step, run_dir,
                 f"; best checkpoint {best}" if best else "")
    acc.wait_for_everyone()
    ev = state.eval_history[-1]["eval_loss"] if state.eval_history else None
    return TrainResult(run_dir, state.global_step, best, last, list(state.losses), ev)
