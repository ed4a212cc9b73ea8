"""A small in-process cache with a time to live, for lookups a process repeats over and over
(an API client's credential, the link it sends through, the inbound server's known addresses,
the worker's DKIM keys)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.conf import settings

V = TypeVar("V")


class ProcessCache(Generic[V]):
    """Values by key, each kept `ttl()` seconds (API_CACHE_SECONDS unless given; 0: nothing is
    kept). Bounded: when full it starts again empty. Other processes are not told of a change;
    a value is at most that old."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: Callable[[], float] = lambda: settings.API_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[Hashable, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: Hashable, value: V, *, since: float | None = None) -> None:
        """Keep `value` for `ttl()` seconds from now, or from `since` (a time.monotonic()
        reading taken when the value was found to be true, before an answer that took a
        while)."""
        ttl = self.ttl()
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = ((time.monotonic() if since is None else since) + ttl, value)

    def clear(self, *args, **kwargs) -> None:
        """Forget everything (also usable as a signal receiver)."""
        with self._lock:
            self._entries.clear()
