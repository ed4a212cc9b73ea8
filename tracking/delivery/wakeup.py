"""Wake-ups: at most one queued task per key (a recipient domain; inbound routing) at a time.

A row for a key says that a task for it is queued and has not started. Whoever commits work
for the task (an accepted message, a stored inbound message) calls `wake` afterwards: it
enqueues a task only when it can claim the row, so a burst costs one task instead of one
broker round trip per item. The task deletes the row when it starts (`clear`), and since it
looks for its work after that, anything committed before a `wake` that found the row is seen.

A task may instead hold its row while it runs and let it go at the end (`finish`), looking
for work once more after that. Its wakers may then trust a row they saw for a moment
(`trust` seconds) without asking again: `finish` waits that long before the last look, so
the task that held the row they saw still finds what they committed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

from django.db import connection, models, transaction
from django.utils import timezone

from tracking.caching import ProcessCache
from tracking.delivery.durability import relax_commit_durability
from tracking.models import DeliveryWakeup

# A wake-up older than this is taken to be lost (its task never ran), and is renewed.
WAKEUP_STALE = timedelta(minutes=5)


class Wakeups:
    """The wake-up rows of one model: a unique key column and `created_at`."""

    def __init__(self, model: type[models.Model], key: str, *, trust: float = 0.0) -> None:
        self.model = model
        self.key = key
        self.trust = trust
        # Keys whose row this process saw within `trust` seconds (counted from before it looked).
        self.seen: ProcessCache[bool] = ProcessCache(ttl=lambda: self.trust)

    def _table_and_column(self) -> tuple[str, str]:
        quote = connection.ops.quote_name
        column = self.model._meta.get_field(self.key).column
        return quote(self.model._meta.db_table), quote(column)

    def pending(self, key: str) -> bool:
        """A task for `key` is queued and not started (nor lost)? It will find work committed
        now, since it looks for its work when it runs."""
        table, column = self._table_and_column()
        fresh = connection.ops.adapt_datetimefield_value(timezone.now() - WAKEUP_STALE)
        # Plain SQL: this runs on every accepted message, and the ORM would cost more than
        # the query.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT 1 FROM {table} WHERE {column} = %s AND created_at >= %s", [key, fresh]
            )
            return cursor.fetchone() is not None

    def claim(self, key: str) -> bool:
        """Note that a task for `key` is being queued. False when one is queued already, so
        the caller need not queue another: that task will find the new work."""
        table, column = self._table_and_column()
        now = timezone.now()
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            # One statement on both PostgreSQL and SQLite: insert, or renew a stale row.
            cursor.execute(
                f"INSERT INTO {table} ({column}, created_at) VALUES (%s, %s) "
                f"ON CONFLICT ({column}) DO UPDATE SET created_at = excluded.created_at "
                f"WHERE {table}.created_at < %s",
                [key, adapt(now), adapt(now - WAKEUP_STALE)],
            )
            return cursor.rowcount == 1

    def clear(self, key: str) -> None:
        """The task for `key` has started: the next `wake` queues a new one."""
        self.model.objects.filter(**{self.key: key}).delete()

    def finish(self, key: str) -> None:
        """For a task that holds its row while it runs: let it go, then wait out the time a
        waker may go on trusting it (`trust`). Work committed by then without a new task
        is committed now: the caller's last look for work, after this, finds it."""
        self.clear(key)
        if self.trust:
            time.sleep(self.trust)

    def trusted(self, key: str) -> bool:
        """Seen within `trust` seconds: `wake` would return at once, without a query."""
        return bool(self.seen.get(key))

    def wake(self, key: str, enqueue: Callable[[], object]) -> None:
        """Call `enqueue` unless a task for `key` is queued already; only once the work it is
        to find has committed.

        Neither row needs fsyncing: the work already is durable, and if a crash lost the
        task, a sweep finds the work.
        """
        if self.trusted(key):
            return  # seen a moment ago: its task looks for work again after `trust` seconds
        looked = time.monotonic()
        if self.pending(key):
            self.seen.put(key, True, since=looked)
            return  # one read, no write: the usual case while a key is busy
        with transaction.atomic():
            relax_commit_durability()  # the wake-up row, and the ORM broker's task row with it
            if self.claim(key):
                enqueue()
        self.seen.put(key, True, since=looked)


delivery_wakeups = Wakeups(DeliveryWakeup, "domain")
