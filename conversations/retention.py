"""The scheduled purge (`iovox:purge`, every 10 minutes) and `manage.py purge`: every
retention rule of the system in one run, each in bounded batches (docs/operations.md).

It lives here because this app sees both sides: tracking's messages, events and webhook
events (tracking/services/retention.py, tracking/webhooks/sender.py), and the raw inbound
mail and limit counters of this app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from conversations.inbound.limits import usage_purge
from conversations.inbound.receive import inbound_messages_purge
from iovox_email.metrics import PURGED_ROWS
from tracking.services import retention
from tracking.webhooks.sender import events_purge

log = logging.getLogger(__name__)

# A run stops starting batches after this long; the next run goes on where it stopped.
RUN_SECONDS = 120.0


def _steps(now: datetime) -> dict[str, Callable[[int, bool], int]]:
    """Each kind of row, and one batch of its purge: (batch size, dry run) -> rows."""
    cutoffs = retention.Cutoffs.at(now)
    steps: dict[str, Callable[[int, bool], int]] = {
        name: (
            lambda batch, dry_run, step=step, cutoff=cutoff: step(
                before=cutoff(cutoffs), batch=batch, dry_run=dry_run
            )
        )
        for name, (step, cutoff) in retention.STEPS.items()
    }
    steps["webhook_events"] = lambda batch, dry_run: events_purge(limit=batch, dry_run=dry_run)
    steps["inbound_messages"] = lambda batch, dry_run: inbound_messages_purge(
        batch=batch, dry_run=dry_run
    )
    steps["inbound_usage"] = lambda batch, dry_run: 0 if dry_run else usage_purge()
    return steps


def purge_run(*, dry_run: bool = False, run_seconds: float = RUN_SECONDS) -> dict[str, int]:
    """Purge every kind of row past its retention, a batch of PURGE_BATCH_SIZE at a time,
    for `run_seconds` at most; rows purged per kind (with `dry_run`: rows that would be,
    nothing deleted)."""
    batch = settings.PURGE_BATCH_SIZE
    deadline = time.monotonic() + run_seconds
    counts: dict[str, int] = {}
    for name, step in _steps(timezone.now()).items():
        counts[name] = 0
        if dry_run:
            counts[name] = step(batch, True)
            continue
        while time.monotonic() < deadline:
            done = step(batch, False)
            counts[name] += done
            if done < batch:
                break
        PURGED_ROWS.labels(kind=name).inc(counts[name])
    if not dry_run and any(counts.values()):
        log.info("purged %s", counts, extra={"purged": counts})
    return counts
