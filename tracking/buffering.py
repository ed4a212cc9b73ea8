"""Work a web process does in batches after its responses: tracking hits, one multi-row write
per batch (tracking/engagement/recorder.py). Batching pays: a hit written within its request
waits for the database, and the web process answers a fraction of the hits a second
(`make bench-tracking`; figures in docs/performance.md).

A batch is due when `batch` items wait or the oldest has waited `interval` seconds. Under
traffic, the request that finds it due handles it after its response has gone out
(`request_finished`), in the request's own thread: a writer thread competing for the GIL with
the request thread would slow every request (each socket call waits for the GIL). When traffic
stops, a timer thread handles what is left; an exit hook handles the rest when the process
stops (gunicorn's graceful stop and max-requests recycling, Ctrl-C). Thread and hook start with
the first item of a process (after gunicorn has forked its workers).

Only work added within a request is batched: there is a response to do it after. Elsewhere
(the worker, the SMTP server, a command) it is done at once. The request signals are connected
when the app starts (`connect_request_signals`, from TrackingConfig.ready), so a process's
first request is batched like the others.

A batch whose handling fails with a DatabaseError is kept and retried one interval later, up
to `limit` items (the oldest are dropped beyond that, with an error in the log). A process
killed outright loses what it held: at most one interval of its work.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from django.core.signals import request_finished, request_started
from django.db import DatabaseError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")


class AfterResponseBuffer(Generic[T]):
    """Items waiting for the next batch. `handle(items)` does the work of one batch; the
    settings are read as callables, so a changed setting (a test's) takes effect at once."""

    def __init__(
        self,
        *,
        name: str,
        handle: Callable[[list[T]], int],
        interval: Callable[[], float],
        batch: Callable[[], int],
        limit: Callable[[], int],
    ) -> None:
        self.name = name
        self.handle = handle
        self.interval = interval
        self.batch = batch
        self.limit = limit
        self._lock = threading.Lock()
        # One handler at a time: the exit hook must wait for a batch the timer thread is
        # handling, or that batch would die with the thread when the process ends.
        self._flush_lock = threading.Lock()
        self._items: list[T] = []
        self._oldest = 0.0
        self._retry_at = 0.0
        self._pid: int | None = None
        _buffers.append(self)

    @property
    def enabled(self) -> bool:
        """Batch only within a request (there is a response to do the work after), and not
        with an interval of 0: elsewhere (the worker, the SMTP server, a command) the caller
        does the work at once."""
        return getattr(_in_request, "active", False) and self.interval() > 0

    def add(self, item: T) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            if not self._items:
                self._oldest = time.monotonic()
            self._items.append(item)
            self._trim()

    def due(self) -> bool:
        now = time.monotonic()
        return (
            bool(self._items)
            and now >= self._retry_at
            and (len(self._items) >= self.batch() or now - self._oldest >= self.interval())
        )

    def flush(self) -> int:
        """Handle what is buffered now; what `handle` returns (0 when there was nothing)."""
        with self._flush_lock:
            items = self._take()
            if not items:
                return 0
            try:
                return self.handle(items)
            except DatabaseError:
                # Unreachable, restarting, a deadlock: kept for the next try.
                self._put_back(items)
                raise

    def flush_quietly(self) -> None:
        try:
            self.flush()
        except DatabaseError:
            log.exception("%s: handling a batch failed; it is kept for a retry", self.name)
        except Exception:
            log.exception("%s: handling a batch failed; it is dropped", self.name)

    def _take(self) -> list[T]:
        with self._lock:
            items, self._items = self._items, []
        return items

    def _put_back(self, items: list[T]) -> None:
        """Keep a batch that could not be handled, and wait an interval before the next try,
        so that while the database is away requests do not each wait for it."""
        with self._lock:
            self._items[:0] = items
            self._trim()
            self._retry_at = time.monotonic() + (self.interval() or 1.0)

    def _trim(self) -> None:
        excess = len(self._items) - self.limit()
        if excess > 0:
            del self._items[:excess]
            log.error("%s: buffer full, dropped the %d oldest items", self.name, excess)

    def _start(self) -> None:
        # A new process (first use, or a fork that inherited a parent's buffer).
        self._pid = os.getpid()
        self._items = []
        threading.Thread(target=self._run, name=self.name, daemon=True).start()
        atexit.register(self.flush_quietly)

    def _run(self) -> None:
        while True:
            # 0 means "no batching"; this thread then only idles.
            time.sleep(self.interval() or 1.0)
            if self.due():
                self.flush_quietly()
                # Not kept open between batches: this thread never holds a connection slot
                # (or a test database) while idle.
                connection.close()


_buffers: list[AfterResponseBuffer] = []


_in_request = threading.local()


def _request_started(sender, **kwargs) -> None:
    _in_request.active = True


def _flush_when_due(sender, **kwargs) -> None:
    _in_request.active = False
    for buffer in _buffers:
        if buffer.due():
            buffer.flush_quietly()


def connect_request_signals() -> None:
    """Called when the app starts: mark the requests, and handle due batches after each."""
    request_started.connect(_request_started, dispatch_uid="tracking.buffering.request_started")
    request_finished.connect(_flush_when_due, dispatch_uid="tracking.buffering.flush_when_due")
