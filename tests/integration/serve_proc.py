"""Start `hone serve` as a real process on loopback for the serve tests, and make its tiny adapters."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[2] / "src"


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A tiny LoRA with random (non-zero) A and B, so each seed makes the model answer differently."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, cfg)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data.normal_(0, 0.5)  # strong enough to change greedy answers of a random base
    peft_model.save_pretrained(out)
    return out


class Server:
    """`python -m hone serve ARGS` with the port it printed; stop() sends a signal and waits."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, timeout: float = 180) -> None:
        full_env = dict(os.environ, PYTHONPATH=str(SRC), **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "hone", "serve", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)
        self.lines: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if m:
                self.url = m.group(1)
                return
        self.proc.kill()
        raise RuntimeError(f"server did not start: {''.join(self.lines)} {self.proc.stderr.read()[-3000:]}")

    def stop(self, sig: int = 15, timeout: float = 60) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, "".join(self.lines) + out, err
