"""One registry type for templates, datasets and models: register by name, refuse duplicates."""
from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from .errors import HoneError

T = TypeVar("T")


class RegistryError(HoneError, KeyError):
    """A name that is not registered, or registered twice; the CLI prints it without a traceback."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """A name → item table whose errors list the valid names."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, *, overwrite: bool = False) -> T:
        key = name.lower()
        if key in self._items and not overwrite:
            raise RegistryError(
                f"{self.kind} '{name}' is already registered; pass overwrite=True to replace it"
            )
        self._items[key] = item
        return item

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._items:
            close = difflib.get_close_matches(key, self._items, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(sorted(self._items))}"
            )
        return self._items[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
