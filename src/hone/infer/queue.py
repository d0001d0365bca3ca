"""The thread-safe way into an engine: requests from many threads, generated together in batches.

One worker thread owns the model. It takes every request waiting (after a short pause so that requests
arriving together meet), groups them by options, adapter and seed, and runs each group as one batch.
Each caller gets a ``Handle`` that streams ``Delta``s or waits for the whole ``Generation``.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

from .engine import Delta, Generation, Request, group_key

_END = object()


class Handle:
    """A submitted request: iterate for ``Delta``s (the last carries the ``Generation``) or call ``result()``."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self._q: queue.Queue[Any] = queue.Queue()
        self._result: Generation | None = None
        self.cancelled = False

    def piece(self, text: str) -> None:
        self._q.put(Delta(text))

    def close(self, result: Generation | BaseException) -> None:
        self._q.put(result)

    def cancel(self) -> None:
        """Stop generating this reply (the others in its batch go on); ``result()`` then holds what was made."""
        self.cancelled = True

    def __iter__(self) -> Iterator[Delta]:
        """The reply's pieces not read yet; after the last one, the ``Delta`` carrying the whole reply."""
        while self._result is None:
            item = self._q.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Generation):
                self._result = item
                yield Delta("", item)
                return
            yield item

    def result(self) -> Generation:
        """Wait for the whole reply."""
        if self._result is None:
            for _ in self:
                pass
        assert self._result is not None
        return self._result


class BatchQueue:
    """Collects requests and runs them in batches of up to ``max_batch`` on a worker thread."""

    def __init__(self, engine: Any, max_batch: int = 16, gather_s: float = 0.01) -> None:
        self.engine, self.max_batch, self.gather_s = engine, max_batch, gather_s
        self._q: queue.Queue[Handle] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="hone-generate", daemon=True)
        self._thread.start()

    def put(self, request: Request) -> Handle:
        h = Handle(request)
        self._q.put(h)
        return h

    def _work(self) -> None:
        while True:
            waiting = [self._q.get()]
            time.sleep(self.gather_s)  # let requests sent at the same moment join this batch
            while len(waiting) < self.max_batch * 4:
                try:
                    waiting.append(self._q.get_nowait())
                except queue.Empty:
                    break
            groups: dict[Any, list[Handle]] = {}
            for h in waiting:
                try:
                    key = group_key(h.request, self.engine._adapter_of(h.request))
                except Exception as e:  # noqa: BLE001 - surfaced to the caller
                    h.close(e)
                    continue
                groups.setdefault(key, []).append(h)
            for hs in groups.values():
                for k in range(0, len(hs), self.max_batch):
                    self._run(hs[k:k + self.max_batch])

    def _run(self, hs: list[Handle]) -> None:
        try:
            results = self.engine.generate_batch([h.request for h in hs], sinks=hs)
        except BaseException as e:  # noqa: BLE001 - every caller of the batch hears of it
            for h in hs:
                h.close(e)
            return
        for h, g in zip(hs, results):
            h.close(g)
