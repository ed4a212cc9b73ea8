"""BytesField: raw mail columns that bulk_create inserts a column at a time (UNNEST) on
PostgreSQL, and that hold any bytes on both databases."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.inbound.mime import Envelope
from conversations.inbound.receive import Arrival, inbound_receive_many
from conversations.models import InboundMessage

ODD_BYTES = [b"", b"\x00\xff\\'\"{},NULL", bytes(range(256)) * 8]


@pytest.mark.django_db
def test_raw_bytes_survive_a_bulk_insert_unchanged():
    envelope = Envelope(mail_from="a@b.example", helo="client", peer="192.0.2.1")
    stored = inbound_receive_many(
        [Arrival(envelope, ["x@iovox.email"], b"Subject: x\r\n\r\n" + raw) for raw in ODD_BYTES]
    )
    for inbound, raw in zip(stored, ODD_BYTES, strict=True):
        assert bytes(InboundMessage.objects.get(pk=inbound.pk).raw).endswith(
            b"Subject: x\r\n\r\n" + raw
        )


@pytest.mark.django_db
def test_a_bulk_insert_is_one_array_per_column_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("UNNEST is PostgreSQL's")
    envelope = Envelope(mail_from="a@b.example", helo="client", peer="192.0.2.1")
    with CaptureQueriesContext(connection) as queries:
        inbound_receive_many([Arrival(envelope, ["x@iovox.email"], b"x\r\n")] * 3)
    (insert,) = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    assert "UNNEST" in insert
