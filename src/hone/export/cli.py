"""`hone export`: merge, then optionally GGUF files and an Ollama Modelfile inside the merged directory."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from .gguf import GGUF_TYPES, family_of, write_gguf
from .merge import locate, merge_run
from .ollama import write_modelfile
from .tokenizer import ExportError

log = logging.getLogger("hone")


def export(path: str | Path, *, out: str | Path | None = None, which: str = "final", dtype: str = "auto",
           gguf_types: Sequence[str] | None = None, force: bool = False, overwrite: bool = False) -> list[Path]:
    """Write the merged directory (and GGUF files + Modelfile when ``gguf_types`` is given: empty means f16).

    Returns the paths written, the merged directory first.
    """
    types = list(dict.fromkeys(gguf_types or ["f16"])) if gguf_types is not None else []
    bad = [t for t in types if t not in GGUF_TYPES]
    if bad:
        raise ExportError(f"unsupported GGUF type {', '.join(bad)}; choose from {', '.join(GGUF_TYPES)}")
    if types:  # say so before the (long) merge when the family cannot be written
        base = locate(path, which).base_dir
        family_of(json.loads((base / "config.json").read_text()), base)
    merged = merge_run(path, out, which=which, dtype=dtype, force=force, overwrite=overwrite)
    written = [merged]
    if not types:
        return written
    from transformers import AutoTokenizer

    from ..runs import read_run

    run = read_run(path)
    for t in types:
        written.append(write_gguf(merged, merged / f"model-{t}.gguf", t))
    tok = AutoTokenizer.from_pretrained(merged)
    add_bos = tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]
    try:
        written.append(write_modelfile(merged, written[1], run.template, tok, run.system, add_bos))
    except ExportError as e:
        log.warning("no Ollama Modelfile: %s (the GGUF files carry the Jinja chat template for llama.cpp)", e)
    return written
