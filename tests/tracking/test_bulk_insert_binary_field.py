"""BulkInsertBinaryField (Message.source_mime): bulk_create inserts it a column at a time
(UNNEST) on PostgreSQL, and it holds any bytes on both databases."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import LinkFactory, MessageFactory
from tracking.models import Message

ODD_BYTES = [b"", b"\x00\xff\\'\"{},NULL", bytes(range(256)) * 8, None]


def unsaved_messages() -> list[Message]:
    link = LinkFactory()
    return [
        MessageFactory.build(account=link.account, link=link, source_mime=raw) for raw in ODD_BYTES
    ]


@pytest.mark.django_db
def test_raw_bytes_survive_a_bulk_insert_unchanged():
    stored = Message.objects.bulk_create(unsaved_messages())
    for message, raw in zip(stored, ODD_BYTES, strict=True):
        source = Message.objects.get(pk=message.pk).source_mime
        assert (None if source is None else bytes(source)) == raw


@pytest.mark.django_db
def test_a_bulk_insert_is_one_array_per_column_on_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("UNNEST is PostgreSQL's")
    messages = unsaved_messages()
    with CaptureQueriesContext(connection) as queries:
        Message.objects.bulk_create(messages)
    (insert,) = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    assert "UNNEST" in insert
