"""Storing what inbound SMTP accepted, before it answers 250."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from conversations.inbound.mime import Envelope, ParsedMessage, received_header
from conversations.models import InboundMessage
from tracking.delivery.durability import relax_commit_durability

log = logging.getLogger(__name__)


def inbound_enqueue_routing() -> None:
    """Wake the worker: one task routes every message pending when it runs. A lost task is
    not a lost message: the sweep re-finds every message still pending after a minute."""
    try:
        with transaction.atomic():
            relax_commit_durability()  # a task row lost in a crash costs only a delay
            async_task("conversations.tasks.inbound_route_pending", task_name="inbound routing")
    except Exception:  # noqa: BLE001 - the rows are committed; the sweep will route them
        log.exception("could not enqueue inbound routing")


def inbound_receive(*, envelope: Envelope, recipients: list[str], raw: bytes) -> InboundMessage:
    """Store a message with our Received trace line on top, as `pending` or, when it is in a
    mail loop, as `refused` with the reason, so the SMTP server can refuse it. Only the header
    block is parsed here; the worker reads the rest. The caller wakes the worker once this
    has committed (`inbound_enqueue_routing`)."""
    queue_id = secrets.token_hex(6)
    raw = received_header(envelope=envelope, recipients=recipients, queue_id=queue_id) + raw
    loop = ParsedMessage.parse(raw).loop_reason()
    return InboundMessage.objects.create(
        peer=envelope.peer[:100],
        mail_from=envelope.mail_from[:998],
        rcpt_to=recipients,
        raw=raw,
        status=InboundMessage.Status.REFUSED if loop else InboundMessage.Status.PENDING,
        error=loop,
    )


def inbound_route_again(*, inbound_pks: list[int]) -> int:
    """Put failed messages back to `pending` (after a fix, say) and wake the worker; how
    many were put back. Routed and refused messages stay as they are."""
    count = InboundMessage.objects.filter(
        pk__in=inbound_pks, status=InboundMessage.Status.FAILED
    ).update(status=InboundMessage.Status.PENDING, error="")
    if count:
        transaction.on_commit(inbound_enqueue_routing)
    return count


def inbound_messages_purge(*, batch: int = 1000) -> int:
    """Delete routed and refused messages older than INBOUND_RETENTION_DAYS, a batch at a
    time; how many were deleted. Failed ones stay until they are routed again."""
    cutoff = timezone.now() - timedelta(days=settings.INBOUND_RETENTION_DAYS)
    old = InboundMessage.objects.filter(
        status__in=[InboundMessage.Status.ROUTED, InboundMessage.Status.REFUSED],
        received_at__lt=cutoff,
    )
    deleted = 0
    for _ in range(100):  # bounded: what is left waits for the next run
        pks = list(old.order_by("received_at").values_list("pk", flat=True)[:batch])
        if not pks:
            break
        InboundMessage.objects.filter(pk__in=pks).delete()
        deleted += len(pks)
    return deleted
