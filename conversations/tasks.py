"""Worker tasks of inbound mail: thin, primary keys in, services called."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from conversations.inbound.receive import inbound_enqueue
from conversations.models import InboundMessage

# A message still pending after this long lost its task (or its worker): route it again.
SWEEP_AFTER = timedelta(minutes=1)
SWEEP_BATCH = 500


def inbound_route(inbound_pk: int) -> str | None:
    from conversations.inbound.routing import inbound_route as route

    inbound = route(inbound_pk=inbound_pk)
    return inbound.status if inbound else None


def inbound_sweep() -> int:
    """Re-queue routing of every message pending for more than a minute."""
    stale = InboundMessage.objects.filter(
        status=InboundMessage.Status.PENDING, received_at__lt=timezone.now() - SWEEP_AFTER
    ).order_by("received_at")
    pks = list(stale.values_list("pk", flat=True)[:SWEEP_BATCH])
    for pk in pks:
        inbound_enqueue(pk)
    return len(pks)
