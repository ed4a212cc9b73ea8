"""Worker tasks of inbound mail: thin, primary keys in, services called."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from conversations.inbound import routing
from conversations.inbound.receive import ROUTING, inbound_messages_purge, routing_wakeups
from conversations.models import InboundMessage

# A message still pending after this long lost its task (or its worker): route it now.
SWEEP_AFTER = timedelta(minutes=1)


def inbound_route_pending() -> int:
    """Enqueued by the SMTP server once messages are stored. Started, it lets the next
    stored message queue another task: it looks for pending messages only after this."""
    routing_wakeups.clear(ROUTING)
    return routing.inbound_route_pending()


def inbound_sweep() -> int:
    """Scheduled: route what is still pending after a minute (a lost task, a dead worker)."""
    stale = InboundMessage.objects.filter(
        status=InboundMessage.Status.PENDING, received_at__lt=timezone.now() - SWEEP_AFTER
    )
    return routing.inbound_route_pending() if stale.exists() else 0


def inbound_purge() -> int:
    """Scheduled: drop raw inbound mail past its retention."""
    return inbound_messages_purge()
