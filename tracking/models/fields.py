"""Model fields of our own."""

from __future__ import annotations

from django.db import models


class BulkInsertBinaryField(models.BinaryField):
    """A BinaryField that bulk_create can insert with one array per column on PostgreSQL
    (`INSERT ... SELECT * FROM UNNEST(...)`, Django 5.2), instead of a placeholder per value.

    Django takes that path only for fields without `get_placeholder`. BinaryField has one
    for MySQL's `_binary %s` and Oracle; on PostgreSQL and SQLite, the databases this
    project runs on, it is the plain `%s` that the compiler uses anyway. A batch of 50 routed
    messages, each with a few dozen columns, was 2,000 placeholders: psycopg splits such a
    query anew every time (it caches only queries of few parameters), and PostgreSQL plans
    every VALUES row.

    Arrays pay off for large batches only (psycopg writes them out in Python): so this is
    for Message.source_mime, which routing inserts in batches of up to 50; InboundMessage.raw,
    stored a few at a time by the SMTP server, stays a BinaryField (docs/performance.md).

    Hiding `get_placeholder` leans on how Django's compiler chooses UNNEST, not on a public
    API: tests/tracking/test_bulk_insert_binary_field.py fails on PostgreSQL if an upgrade
    changes that."""

    @property
    def get_placeholder(self):
        raise AttributeError("get_placeholder")  # so hasattr() is False: see the docstring
