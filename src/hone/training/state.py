"""The run's bookkeeping across processes and restarts: run directory, resume checks, weights in and out."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..config import RunCfg
from ..data.pipeline import PreparedData
from ..errors import CheckpointError
from .. import runs
from . import checkpoint as ckpt
from .schedule import BatchPlan

log = logging.getLogger("hone")

# what must not change between a checkpoint and the run resuming it: (state field, what to call it)
MUST_MATCH = (("fingerprint", "training data"), ("rows", "training rows"), ("batch_size", "batch_size"),
              ("gradient_accumulation_steps", "gradient_accumulation_steps"), ("world_size", "process count"),
              ("max_steps", "max_steps"), ("num_train_epochs", "num_train_epochs"), ("seed", "seed"))
_OPTIONAL = ("last_checkpoint", "best_checkpoint", "rng")  # written to JSON only once they are set


@dataclass
class TrainState:
    """Where a run stands; saved as ``trainer_state.json`` in every checkpoint (field names are its keys)."""

    global_step: int = 0
    epoch: float = 0.0
    total_steps: int = 0
    losses: list[float] = field(default_factory=list)
    eval_history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    skipped_steps: int = 0
    # what the run was set up with (checked on resume, see MUST_MATCH)
    fingerprint: str = ""
    rows: int = 0
    batch_size: int = 0
    gradient_accumulation_steps: int = 1
    world_size: int = 1
    max_steps: int = -1
    num_train_epochs: float = 0.0
    seed: int = 0
    last_checkpoint: str | None = None
    best_checkpoint: str | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    """Each process's Python and NumPy RNG states (by process index), as the checkpoint saved them."""

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``trainer_state.json`` (without the RNG states, which the checkpoint adds)."""
        out = asdict(self)
        for k in _OPTIONAL:
            if not out[k]:
                del out[k]
        out.pop("rng", None)
        return out

    @classmethod
    def from_json(cls, raw: Any, where: Path | str) -> "TrainState":
        """Read a saved state; fields it lacks keep their defaults, keys this version does not know are named."""
        if not isinstance(raw, dict):
            raise CheckpointError(f"{where}: not a trainer state (a JSON object was expected)")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            log.warning("%s: ignoring unknown trainer state keys %s", where, ", ".join(unknown))
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as e:
            raise CheckpointError(f"{where}: not a trainer state ({e})") from None


def fresh_state(plan: BatchPlan, data: PreparedData) -> TrainState:
    """The trainer state of a run at step 0."""
    return TrainState(total_steps=plan.total_steps, fingerprint=data.fingerprint, rows=plan.n_rows,
                      batch_size=plan.batch_size, gradient_accumulation_steps=plan.accum, world_size=plan.world,
                      max_steps=plan.max_steps, num_train_epochs=plan.epochs, seed=plan.seed)


def resume_state(cfg: RunCfg, found: ckpt.Checkpoint | None, plan: BatchPlan, data: PreparedData) -> TrainState:
    """The state to start from: fresh, or the checkpoint's after checking nothing that matters changed."""
    fresh = fresh_state(plan, data)
    if found is None:
        return fresh
    raw = ckpt.load_state(found, weights_only=cfg.train.resume_weights_only)
    if cfg.train.resume_weights_only:
        log.warning("resuming from the weights of %s only: optimizer moments, learning-rate schedule (warmup "
                    "runs again) and data position start over", found.path)
        return fresh
    saved = TrainState.from_json(raw, found.path / ckpt.STATE)
    changed = [f"{label}: {raw.get(k)} -> {getattr(fresh, k)}" for k, label in MUST_MATCH
               if raw.get(k) != getattr(fresh, k)]
    if changed and not cfg.train.resume_ignore_changes:
        raise CheckpointError(f"cannot resume {found.path} exactly; the run changed since it was saved:\n  "
                              + "\n  ".join(changed) + "\nRestore those settings, or set resume_ignore_changes: "
                              "true to resume anyway")
    if changed:
        log.warning("resuming %s although the run changed (resume_ignore_changes): %s", found.path, "; ".join(changed))
    if saved.global_step >= plan.total_steps:
        raise CheckpointError(f"{found.path} is the end of a finished run (step {saved.global_step} of "
                              f"{plan.total_steps}); there is nothing left to train. Raise max_steps or "
                              "num_train_epochs (with resume_ignore_changes: true) to train further")
    log.info("resuming from %s (step %d of %d)", found.path, saved.global_step, plan.total_steps)
    # the run's progress comes from the checkpoint; its setup (and total_steps) from this run
    setup = {k for k, _ in MUST_MATCH} | {"total_steps"}
    return replace(saved, **{k: getattr(fresh, k) for k in setup})


def run_dir_and_resume(cfg: RunCfg, acc: Any) -> tuple[Path, ckpt.Checkpoint | None]:
    """Pick the run directory (the same on every process) and the checkpoint to resume from."""
    from accelerate.utils import broadcast_object_list

    holder: list[Any] = [None]
    if acc.is_main_process:
        run_dir, found = _pick(cfg)
        runs.ensure_writable(run_dir)
        ckpt.sweep_staging(run_dir)
        if found is None:
            runs.claim_run_dir(run_dir, cfg.train.overwrite_output_dir)
        holder = [(str(run_dir), (str(found.path), found.step) if found else None)]
    holder = broadcast_object_list(holder) if acc.num_processes > 1 else holder
    run_dir_s, found_t = holder[0]
    return Path(run_dir_s), (ckpt.Checkpoint(Path(found_t[0]), found_t[1]) if found_t else None)


def _pick(cfg: RunCfg) -> tuple[Path, ckpt.Checkpoint | None]:
    ref = cfg.train.resume_from_checkpoint
    if not ref:
        return _new_run_dir(cfg), None
    if ref.lower() in ("auto", "true", "latest", "last"):
        run_dir = runs.latest_run_dir(cfg.train.output_dir, cfg.model.model, cfg.train.add_output_dir_suffix)
        found = ckpt.find("auto", run_dir) if run_dir else None
        if found is not None:
            return run_dir, found
        if ref.lower() != "auto":
            raise CheckpointError(f"resume_from_checkpoint {ref}: no complete checkpoint under "
                                  f"{run_dir or cfg.train.output_dir}; use `auto` to start fresh when there is none")
        log.info("resume_from_checkpoint auto: no checkpoint yet under %s; starting fresh", cfg.train.output_dir)
        return _new_run_dir(cfg), None
    found = ckpt.find(ref, Path(ref))
    assert found is not None
    # a weights-only start is a new run: it must not overwrite the checkpoints it started from
    return (_new_run_dir(cfg) if cfg.train.resume_weights_only else found.path.parent), found


def _new_run_dir(cfg: RunCfg) -> Path:
    return runs.new_run_dir(cfg.train.output_dir, cfg.model.model, cfg.train.add_output_dir_suffix)


def save_weights(model: Any, folder: Path, tokenizer: Any = None) -> None:
    """The model's weights (an adapter alone for LoRA) as safetensors, and the tokenizer."""
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def load_weights(model: Any, folder: Path) -> None:
    """Load a checkpoint's weights into the (already wrapped) model; safetensors only, never a pickle."""
    from safetensors.torch import load_file

    if (folder / "adapter_model.safetensors").is_file():
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise CheckpointError(f"{folder}: the adapter does not fit this model (unexpected {unexpected[:3]})")
        return
    if (folder / "model.safetensors").is_file():
        missing, unexpected = model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)
        tied = {k for k in missing if "lm_head" in k or "embed" in k}
        if set(missing) - tied or unexpected:
            raise CheckpointError(f"{folder}: weights do not match the model (missing {sorted(missing)[:3]}, "
                                  f"unexpected {sorted(unexpected)[:3]})")
        return
    if (folder / "model.safetensors.index.json").is_file():
        from transformers.modeling_utils import load_sharded_checkpoint

        load_sharded_checkpoint(model, folder, strict=False)
        return
    raise CheckpointError(f"{folder} holds no weights (adapter_model.safetensors or model.safetensors)")


def save_checkpoint(acc: Any, model: Any, optimizer: Any, scheduler: Any, state: TrainState, run_dir: Path,
                    cfg: RunCfg) -> None:
    """Every process hands its RNG state to the main one, which writes checkpoint-<step> and rotates."""
    from accelerate.utils import gather_object

    rngs = gather_object([(acc.process_index, ckpt.rng_state())]) if acc.num_processes > 1 \
        else [(0, ckpt.rng_state())]
    if acc.is_main_process:
        best = run_dir / f"checkpoint-{state.best_step}" if state.best_step else None
        path = ckpt.save(run_dir, state.global_step, save_weights=lambda d: save_weights(model, d),
                         optimizer=optimizer, scheduler=scheduler, state=state.to_json(),
                         rank_rng=dict(rngs), weights_only=cfg.train.only_save_model)
        state.last_checkpoint = str(path)
        ckpt.rotate(run_dir, cfg.train.save_total_limit, best if best and best.exists() else None)
    acc.wait_for_everyone()


def write_run_info(run_dir: Path, record: dict[str, Any], state: TrainState) -> None:
    """``hone_run.json``: the run's record (see record.run_record) and where it stands."""
    runs.write_run_info(run_dir, {**record, "global_step": state.global_step,
                                  "best_checkpoint": state.best_checkpoint, "last_checkpoint": state.last_checkpoint})


def warn_differences(record: dict[str, Any], earlier: Path | None, what: str) -> list[str]:
    """Log, as one warning, what repeating the run at ``earlier`` needs that this run does differently."""
    if earlier is None or runs.run_dir_of(earlier) is None:
        return []
    try:
        changed = runs.differences(runs.read_run(earlier), record)
    except runs.RunError:
        return []
    if changed:
        log.warning("this run %s %s, but differs from its record in:\n  %s", what, runs.run_dir_of(earlier),
                    "\n  ".join(changed))
    return changed
