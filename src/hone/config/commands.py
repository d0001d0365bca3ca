"""The config sections each command reads.

A command builds and validates only its own sections. Keys of the other sections are still accepted, so one
YAML can serve `hone train`, `hone chat` and `hone data`, but they are not checked and have no effect there.
"""
from __future__ import annotations

from .keys import SECTIONS

COMMAND_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": tuple(SECTIONS),  # the run's saved config keeps every section
    "chat": ("model", "tune", "gen"),  # tune: the adapter to load
    "data": ("model", "data", "train"),  # train: batch size and accumulation give the steps per epoch
    "config": tuple(SECTIONS),
}


def sections_for(command: str) -> tuple[str, ...]:
    """The sections ``command`` reads (every section for a command not listed)."""
    return COMMAND_SECTIONS.get(command, tuple(SECTIONS))
