"""Worker tasks (django-q2). Thin: they take primary keys or names and call a service."""

from __future__ import annotations

from tracking import worker


def delivery_loop() -> int:
    """One run of the resident delivery loop (tracking/worker.py), enqueued by the run before
    it, by each worker process as it starts, and by a one-minute schedule."""
    return worker.delivery_loop()


def webhook_loop() -> int:
    """One run of the resident webhook loop (tracking/worker.py), started like the others."""
    return worker.webhook_loop()
