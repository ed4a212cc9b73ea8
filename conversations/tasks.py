"""Worker tasks of inbound mail: thin, primary keys in, services called."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from conversations import domains
from conversations.inbound import routing
from conversations.inbound.receive import (
    ROUTING,
    inbound_enqueue_routing,
    inbound_messages_purge,
    inbound_retry_due,
    routing_wakeups,
)
from conversations.models import InboundMessage

# A message still pending after this long lost its task (or its worker): route it now.
SWEEP_AFTER = timedelta(minutes=1)


def inbound_route_pending() -> int:
    """Enqueued by the SMTP server once messages are stored. The wake-up stays while the task
    routes, so the server queues no second routing task meanwhile: a second worker routing
    too would only split the batches (each costs a fixed few milliseconds) and leave no
    worker to deliver what was routed. Let go at the end (`finish`); whatever is pending then
    (stored after the last look, while the wake-up said a task was coming) gets a task of
    its own. A worker that dies mid-task leaves the wake-up for WAKEUP_STALE: the sweep
    routes the messages meanwhile."""
    try:
        done = routing.inbound_route_pending()
    finally:
        routing_wakeups.finish(ROUTING)  # even after a failure: the next message wakes a task
    if InboundMessage.objects.filter(status=InboundMessage.Status.PENDING).exists():
        inbound_enqueue_routing()
    return done


def inbound_sweep() -> int:
    """Scheduled: route what is still pending after a minute (a lost task, a dead worker),
    and deferred messages whose retry is due."""
    inbound_retry_due()
    stale = InboundMessage.objects.filter(
        status=InboundMessage.Status.PENDING, received_at__lt=timezone.now() - SWEEP_AFTER
    )
    return routing.inbound_route_pending() if stale.exists() else 0


def inbound_purge() -> int:
    """Scheduled: drop raw inbound mail past its retention."""
    return inbound_messages_purge()


def check_domains() -> int:
    """Scheduled: our domains' DNS checked (as many as fit in the run's time); how many."""
    return len(domains.domains_check(time_limit=domains.RUN_TIME_LIMIT))
