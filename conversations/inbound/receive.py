"""Storing what inbound SMTP accepted, before it answers 250."""

from __future__ import annotations

import logging
import secrets

from django.db import transaction
from django_q.tasks import async_task

from conversations.inbound.mime import Envelope, ParsedMessage, received_header
from conversations.models import InboundMessage

log = logging.getLogger(__name__)


def inbound_enqueue(inbound_pk: int) -> None:
    """Hand routing to the worker. A lost task is not a lost message: the sweep re-finds
    every message still pending after a minute."""
    try:
        async_task("conversations.tasks.inbound_route", inbound_pk)
    except Exception:  # noqa: BLE001 - the row is committed; the sweep will route it
        log.exception("could not enqueue routing of inbound message %s", inbound_pk)


def inbound_receive(*, envelope: Envelope, recipients: list[str], raw: bytes) -> InboundMessage:
    """Store a message with our Received trace line on top, as `pending` (routing queued on
    commit) or, when it is in a mail loop, as `refused` with the reason, so the SMTP server can
    refuse it. Only the header block is parsed here; the worker reads the rest."""
    queue_id = secrets.token_hex(6)
    raw = received_header(envelope=envelope, recipients=recipients, queue_id=queue_id) + raw
    loop = ParsedMessage.parse(raw).loop_reason()
    with transaction.atomic():
        inbound = InboundMessage.objects.create(
            peer=envelope.peer[:100],
            mail_from=envelope.mail_from[:998],
            rcpt_to=recipients,
            raw=raw,
            status=InboundMessage.Status.REFUSED if loop else InboundMessage.Status.PENDING,
            error=loop,
        )
        if not loop:
            transaction.on_commit(lambda: inbound_enqueue(inbound.pk))
    return inbound
