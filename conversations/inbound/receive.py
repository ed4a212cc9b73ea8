"""Storing what inbound SMTP accepted, before it answers 250."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models.sql import InsertQuery
from django.utils import timezone

from conversations.inbound.mime import Envelope, loop_reason, received_header
from conversations.models import InboundMessage
from tracking.text import text_safe


@dataclass(frozen=True)
class Arrival:
    """A message as the SMTP conversation handed it over, to be stored."""

    envelope: Envelope
    recipients: list[str]
    raw: bytes


def inbound_receive(*, envelope: Envelope, recipients: list[str], raw: bytes) -> InboundMessage:
    """Store one message: `inbound_receive_many` of one."""
    return inbound_receive_many([Arrival(envelope, recipients, raw)])[0]


def inbound_receive_many(arrivals: Sequence[Arrival]) -> list[InboundMessage]:
    """Store messages, in one transaction (one durable commit for all of them), each with our
    Received trace line on top, as `pending` or, when it is in a mail loop, as `refused` with
    the reason, so the SMTP server can refuse it. Only the header names are read here; the
    worker's routing loop reads the rest once it finds them (tracking/worker.py)."""
    rows = inbound_rows(arrivals)
    if len(rows) == 1:
        # One INSERT on its own commits by itself: bulk_create's transaction would add a
        # BEGIN and a COMMIT round trip.
        rows[0].save(force_insert=True)
        return rows
    # bulk_create: one INSERT (a long list in batches), in one transaction.
    return InboundMessage.objects.bulk_create(rows)


def inbound_rows(arrivals: Sequence[Arrival]) -> list[InboundMessage]:
    """The unsaved rows of arriving messages: each with our Received trace line on top,
    `pending`, or `refused` with the reason when it is in a mail loop."""
    return [_inbound_row(arrival) for arrival in arrivals]


def inbound_insert_statement(rows: Sequence[InboundMessage]) -> tuple[str, list]:
    """The one INSERT ... RETURNING id that stores `rows`, as Django's compiler writes it for
    bulk_create (PostgreSQL), for a connection other than Django's own (the SMTP server's
    asynchronous one). Compiling it needs no database connection."""
    opts = InboundMessage._meta
    query = InsertQuery(InboundMessage)
    query.insert_values([f for f in opts.concrete_fields if not f.primary_key], rows)
    compiler = query.get_compiler(connection=connection)
    compiler.returning_fields = [opts.pk]
    ((sql, params),) = compiler.as_sql()
    return sql, list(params)


def _inbound_row(arrival: Arrival) -> InboundMessage:
    envelope = arrival.envelope
    queue_id = secrets.token_hex(6)
    trace = received_header(envelope=envelope, recipients=arrival.recipients, queue_id=queue_id)
    raw = trace + arrival.raw
    loop = loop_reason(raw)
    return InboundMessage(
        peer=envelope.peer[:100],
        helo=text_safe(envelope.helo)[:255],  # for SPF of a null sender
        mail_from=text_safe(envelope.mail_from)[:998],
        rcpt_to=arrival.recipients,
        raw=raw,
        status=InboundMessage.Status.REFUSED if loop else InboundMessage.Status.PENDING,
        error=loop,
    )


def inbound_route_again(*, inbound_pks: list[int]) -> int:
    """Put failed and deferred messages back to `pending` now (after a fix, say), for the
    routing loop to find; how many were put back. A failed one gets the whole
    INBOUND_RETRY_SCHEDULE again. Routed and refused messages stay as they are."""
    return InboundMessage.objects.filter(
        pk__in=inbound_pks,
        status__in=[InboundMessage.Status.FAILED, InboundMessage.Status.DEFERRED],
    ).update(status=InboundMessage.Status.PENDING, error="", attempts=0, retry_at=None)


def inbound_retry_due() -> int:
    """Put deferred messages whose `retry_at` has come back to `pending`; how many. The
    routing loop calls it every turn, so a retry happens within a second of its time."""
    return InboundMessage.objects.filter(
        status=InboundMessage.Status.DEFERRED, retry_at__lte=timezone.now()
    ).update(status=InboundMessage.Status.PENDING, retry_at=None)


def inbound_messages_purge(*, batch: int = 1000) -> int:
    """Delete messages that are done with (routed, refused, or failed after their last
    attempt) and older than INBOUND_RETENTION_DAYS, a batch at a time; how many were
    deleted. Pending and deferred ones stay: they are still to be routed."""
    cutoff = timezone.now() - timedelta(days=settings.INBOUND_RETENTION_DAYS)
    old = InboundMessage.objects.filter(
        status__in=[
            InboundMessage.Status.ROUTED,
            InboundMessage.Status.REFUSED,
            InboundMessage.Status.FAILED,
        ],
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
