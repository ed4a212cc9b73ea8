"""One queued delivery task per recipient domain at a time (see DeliveryWakeup)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.utils import timezone

from tracking.models import DeliveryWakeup

# A wake-up older than this is taken to be lost (its task never ran), and is renewed.
WAKEUP_STALE = timedelta(minutes=5)


def delivery_wakeup_pending(*, domain: str) -> bool:
    """A task for `domain` is queued and not started (nor lost)? It will find a message
    committed now, since it claims what is due when it runs."""
    table = connection.ops.quote_name(DeliveryWakeup._meta.db_table)
    fresh = connection.ops.adapt_datetimefield_value(timezone.now() - WAKEUP_STALE)
    # Plain SQL: this runs on every accepted message, and the ORM would cost more than the query.
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE domain = %s AND created_at >= %s", [domain, fresh]
        )
        return cursor.fetchone() is not None


def delivery_wakeup_claim(*, domain: str) -> bool:
    """Note that a delivery task for `domain` is being queued. False when one is queued
    already, so the caller need not queue another: that task will find the new message."""
    table = connection.ops.quote_name(DeliveryWakeup._meta.db_table)
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        # One statement on both PostgreSQL and SQLite: insert, or renew a stale row.
        cursor.execute(
            f"INSERT INTO {table} (domain, created_at) VALUES (%s, %s) "
            f"ON CONFLICT (domain) DO UPDATE SET created_at = excluded.created_at "
            f"WHERE {table}.created_at < %s",
            [domain, adapt(now), adapt(now - WAKEUP_STALE)],
        )
        return cursor.rowcount == 1


def delivery_wakeup_clear(*, domain: str) -> None:
    """The domain's task has started: the next accepted message queues a new one."""
    DeliveryWakeup.objects.filter(domain=domain).delete()
