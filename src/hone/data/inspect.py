"""`hone data check` and `hone data preview`: what the data looks like to the model, before training."""
from __future__ import annotations

from typing import Any


def check_report(cfg: Any) -> str:
    raise NotImplementedError


def preview(cfg: Any, n: int = 3, color: bool = False) -> str:
    raise NotImplementedError
