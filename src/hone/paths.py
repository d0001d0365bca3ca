"""Where hone keeps what it caches: ``$HONE_HOME`` (default ``~/.cache/hone``) and the folders under it."""
from __future__ import annotations

import os
from pathlib import Path


def hone_home() -> Path:
    """hone's cache root: ``$HONE_HOME`` or ``~/.cache/hone``."""
    return Path(os.environ.get("HONE_HOME") or Path.home() / ".cache" / "hone")


def models_dir() -> Path:
    """Converted and pulled model directories."""
    return hone_home() / "models"


def data_cache_dir() -> Path:
    """Tokenized data, keyed by content."""
    return hone_home() / "cache" / "data"
