"""Errors hone raises for things a user can fix. The CLI prints their message alone, without a traceback."""
from __future__ import annotations


class HoneError(Exception):
    """Base of every user-fixable error: the message says what is wrong and how to fix it."""


class ConfigError(HoneError):
    """A config key, value or combination that cannot work."""


class DataError(HoneError):
    """A data file or row that cannot be used."""


class ModelError(HoneError):
    """A model that cannot be found, fetched, converted or loaded."""


class CheckpointError(HoneError):
    """A checkpoint that cannot be written or resumed from."""


class TrainingError(HoneError):
    """Training cannot go on (non-finite loss, nothing to train on, ...)."""
