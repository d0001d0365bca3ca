"""What the loop needs before its first step: processes, run directory, optimizer, schedule."""
from __future__ import annotations

import datetime as _dt
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunCfg
from ..config.derive import learning_rate
from ..errors import ConfigError
from .schedule import lr_lambda, warmup_steps

log = logging.getLogger("hone")

DEEPSPEED_PRESETS = ("zero2", "zero3", "zero2_offload", "zero3_offload")


def make_accelerator(cfg: RunCfg, mixed: str) -> Any:
    """accelerate's Accelerator for this run: one process, DDP under a launcher, or DeepSpeed / FSDP."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    t = cfg.train
    cpu = not torch.cuda.is_available()  # accelerate only runs several CPU processes (gloo) when told "cpu"
    kwargs: dict[str, Any] = {"mixed_precision": mixed, "gradient_accumulation_steps": t.gradient_accumulation_steps,
                              "cpu": cpu,
                              "kwargs_handlers": [InitProcessGroupKwargs(timeout=_dt.timedelta(seconds=t.ddp_timeout))]}
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        # one process may train several runs in turn (the Python API, a notebook): accelerate keeps its first
        # run's settings (mixed precision) process-wide, so each run starts from a clean state
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    backend = ddp_backend(t.ddp_backend)
    if backend is not None:
        from accelerate import PartialState

        PartialState(cpu, backend=backend)  # the shared state the Accelerator below joins
    if t.deepspeed:
        kwargs["deepspeed_plugin"] = deepspeed_plugin(t.deepspeed, t.gradient_accumulation_steps, t.max_grad_norm)
    try:
        acc = Accelerator(**kwargs)
    except (ValueError, RuntimeError, ImportError) as e:
        raise ConfigError(f"cannot set up the training processes: {e}") from None
    if acc.state.deepspeed_plugin is not None:  # no dataloader goes through prepare(), so say it here
        acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = t.batch_size
    return acc


def ddp_backend(wanted: str) -> str | None:
    """The torch.distributed backend to ask for; None lets accelerate choose (or there is one process).

    A launcher says how many processes there are through WORLD_SIZE (torchrun's contract); a single
    process needs no backend, so recipes written for GPU clusters (`ddp_backend: nccl`) run anywhere.
    """
    if wanted == "auto" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if wanted == "nccl" and not torch.cuda.is_available():
        log.warning("ddp_backend nccl needs CUDA GPUs; using gloo on this machine")
        return "gloo"
    return wanted


def deepspeed_plugin(spec: str, accum: int, clip: float) -> Any:
    import importlib.util

    if not torch.cuda.is_available():
        raise ConfigError("deepspeed needs CUDA GPUs; on this machine train without it (remove `deepspeed`)")
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed is not installed: pip install 'hone[deepspeed]'")
    from accelerate.utils import DeepSpeedPlugin

    if spec in DEEPSPEED_PRESETS:
        from importlib import resources

        path = resources.files("hone") / "resources" / "deepspeed" / f"{spec}.json"
        spec = str(path)
    elif not Path(spec).is_file():
        raise ConfigError(f"deepspeed: '{spec}' is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor a file")
    return DeepSpeedPlugin(hf_ds_config=spec, gradient_accumulation_steps=accum, gradient_clipping=clip or None)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, cfg: RunCfg) -> torch.optim.Optimizer:
    """The named optimizer over trainable parameters; no weight decay on biases and norm weights."""
    t = cfg.train
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    lr = learning_rate(cfg)
    name = t.optim
    betas = (t.adam_beta1, t.adam_beta2)
    if name in ("adamw_torch", "adamw", "adamw_torch_fused"):
        # one fused kernel over all parameters instead of a loop of small ops per tensor (hundreds of LoRA
        # matrices); CPU and CUDA both have it. DeepSpeed wraps the optimizer itself: leave it plain there.
        fused = not t.deepspeed
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=t.adam_epsilon, fused=fused or None)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=t.adam_epsilon)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    if name == "adafactor":
        return torch.optim.Adafactor(groups, lr=lr)
    if name in ("adamw_8bit", "paged_adamw_8bit"):
        if not torch.cuda.is_available():
            raise ConfigError(f"optim {name} needs a CUDA GPU (bitsandbytes); use adamw_torch")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ConfigError(f"optim {name} needs bitsandbytes: pip install 'hone[qlora]'") from None
        cls = bnb.optim.PagedAdamW8bit if name.startswith("paged") else bnb.optim.AdamW8bit
        return cls(groups, lr=lr, betas=betas, eps=t.adam_epsilon)
    raise ConfigError(f"unknown optimizer {name}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: RunCfg, total: int) -> Any:
    t = cfg.train
    warm = warmup_steps(t.warmup_steps, t.warmup_ratio, total)
    if t.lr_scheduler_type == "constant":
        warm = 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.lr_scheduler_type, warm, total, t.min_lr_ratio))
