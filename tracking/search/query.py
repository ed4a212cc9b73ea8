"""Running a search: the account's filtered messages, counted, ordered, paged and shaped into
the spec's result rows without building model instances."""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from typing import Any

from django.db import connections, transaction
from django.db.models import CharField, F, Func, OrderBy, QuerySet

from tracking.models import Account, Link, Message
from tracking.search.params import AVAILABLE_FIELDS, SearchQuery

# Each available field (and filter) as a path from Message.
PATHS: dict[str, str] = {
    "message_id": "message_id",
    "receive_date": "receive_date",
    "delivery_date": "delivery_date",
    "node_id": "link__node__node_id",
    "node_name": "link__node__node_name",
    "node_type": "link__node__node_type",
    "link_id": "link__link_id",
    "link_name": "link__link_name",
    "link_type": "link__link_type",
    "sender_address": "sender_address",
    "sender_name": "sender_name",
    "recipient_address": "recipient_address",
    "recipient_name": "recipient_name",
    "proxy_address": "proxy_address",
    "proxy_name": "proxy_name",
    "conversation_id": "conversation_id",
    "disposition": "disposition",
    "read_disposition": "read_disposition",
    "read_first_date": "read_first_date",
}
# Node and link filters, as paths from Link.
LINK_PATHS: dict[str, str] = {
    "node_id": "node__node_id",
    "node_name": "node__node_name",
    "node_type": "node__node_type",
    "link_id": "link_id",
    "link_name": "link_name",
    "link_type": "link_type",
}
# Up to this many links matched by node/link filters are passed to the message query as
# constants; beyond it, as a subquery.
MAX_LINK_KEYS = 1000
NULLABLE = frozenset({"delivery_date", "conversation_id", "read_first_date"})
# Rows are fetched from the database this many at a time (a server-side cursor on PostgreSQL).
CHUNK_SIZE = 2000


class UtcText(Func):
    """A date/time as the spec's `YYYY-MM-DD HH:MM:SS` in UTC, written by the database:
    loading a timestamp into Python and formatting it there costs ten times more per row."""

    output_field = CharField()

    def as_postgresql(self, compiler, connection, **extra):
        template = "to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps SQLite datetimes as UTC text; datetime() drops the fraction.
        return self.as_sql(compiler, connection, template="datetime(%(expressions)s)", **extra)


class UuidText(Func):
    """A UUID as its hyphenated text, written by the database."""

    output_field = CharField()

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="(%(expressions)s)::text", **extra)

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps SQLite UUIDs as 32 hex digits.
        parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
        template = " || '-' || ".join(f"substr(%(expressions)s, {a}, {n})" for a, n in parts)
        return self.as_sql(compiler, connection, template=f"({template})", **extra)


def _column(name: str):
    """The expression that selects field `name` as the text the spec returns."""
    if name in ("message_id", "conversation_id"):
        return UuidText(PATHS[name])
    if name.endswith("_date"):
        return UtcText(PATHS[name])
    return F(PATHS[name])


def search_queryset(*, account: Account, query: SearchQuery) -> QuerySet[Message]:
    """The account's messages received in the query's range that match all its filters,
    unordered: the one query builder of the search API and the portal's Communication
    Details (KPIs, charts, CSV).

    Node and link filters are resolved here, first, to the account's matching link keys (one
    small query), so the message query filters on constants: PostgreSQL then estimates it
    from its statistics and can walk (account, link, receive_date) in order for one link,
    where a join would make it fetch and sort every match."""
    messages = Message.objects.for_account(account).filter(receive_date__gte=query.start)
    if query.end < datetime.max.replace(tzinfo=UTC) - timedelta(seconds=1):
        # `end` is inclusive to the second, so anything before the next second is in.
        messages = messages.filter(receive_date__lt=query.end + timedelta(seconds=1))
    else:
        messages = messages.filter(receive_date__lte=query.end)  # 9999-12-31 23:59:59
    link_filters = {LINK_PATHS[n]: v for n, v in query.filters.items() if n in LINK_PATHS}
    if link_filters:
        links = Link.objects.filter(account=account, **link_filters).values_list("pk", flat=True)
        keys = list(links[: MAX_LINK_KEYS + 1])
        messages = messages.filter(link__in=keys if len(keys) <= MAX_LINK_KEYS else links)
    message_filters = {
        PATHS[name]: value for name, value in query.filters.items() if name not in LINK_PATHS
    }
    return messages.filter(**message_filters) if message_filters else messages


def search_ordering(query: SearchQuery) -> list[OrderBy]:
    """The query's order, made total by the primary key. An absent date or conversation sorts
    after every value ascending and before every value descending (PostgreSQL's own rule,
    made explicit so SQLite agrees and the indexes still serve it)."""
    ordering = []
    for name, descending in query.order:
        expression = F(PATHS[name])
        if descending:
            ordering.append(expression.desc(nulls_first=name in NULLABLE or None))
        else:
            ordering.append(expression.asc(nulls_last=name in NULLABLE or None))
    ordering.append(F("pk").asc())
    return ordering


def search_count(*, account: Account, query: SearchQuery) -> int:
    """How many messages match, on every page together (the spec's `total_results`)."""
    return search_queryset(account=account, query=query).count()


def search_rows(*, account: Account, query: SearchQuery) -> Iterator[dict[str, str]]:
    """The rows of the query's page as the spec shapes them: only `query.fields`, dates as
    `YYYY-MM-DD HH:MM:SS` UTC, and a field the message does not have (null or empty) left
    out. Streamed from the database in chunks; no model instance is built."""
    return _page_rows(search_queryset(account=account, query=query), query)


def _page_rows(messages: QuerySet[Message], query: SearchQuery) -> Iterator[dict[str, str]]:
    ordering = search_ordering(query)
    ordered = messages.order_by(*ordering)
    if query.offset:
        # A deep page: its keys come first from the index alone (an index-only scan skips
        # the offset without reading a row), then only the page's rows are read.
        keys = ordered.values("pk")[query.offset : query.offset + query.limit]
        ordered = Message.objects.filter(pk__in=keys).order_by(*ordering)
    else:
        ordered = ordered[: query.limit]
    page = ordered.values_list(*[_column(name) for name in query.fields])
    names = query.fields
    for values in _fetch(page, query.limit):
        # Every value is text or null here; null and "" are fields the message lacks.
        yield {name: value for name, value in zip(names, values, strict=True) if value}


def _fetch(page: QuerySet, limit: int) -> Iterator[tuple]:
    """A small page is one plain query. A large one comes through a server-side cursor, a
    chunk at a time, so it never sits whole in memory. On PostgreSQL that cursor is read
    inside a transaction: outside one, Django declares it WITH HOLD, which makes the server
    compute the whole page before the first row is sent."""
    if limit <= CHUNK_SIZE:
        yield from page
    elif connections[page.db].vendor == "postgresql":
        with transaction.atomic(using=page.db):
            yield from page.iterator(chunk_size=CHUNK_SIZE)
    else:
        # SQLite's transactions here take the write lock (IMMEDIATE), so none is opened.
        yield from page.iterator(chunk_size=CHUNK_SIZE)


def message_rows(pks: list[int]) -> dict[int, dict[str, Any]]:
    """These messages as `GET /rest/v1/email/{message_id}` shows them without their attempts
    and events (every available field, shaped as search shapes them, plus `subject`,
    `status_detail`, `content_kept` and `event_counts`), by primary key, with one query: what
    a webhook event's `data` is made of."""
    from tracking.engagement.events import COUNTER_FIELDS, message_event_counts

    if not pks:
        return {}
    names = [*AVAILABLE_FIELDS, "subject", "status_detail"]
    columns = [_column(name) for name in AVAILABLE_FIELDS]
    rows = Message.objects.filter(pk__in=set(pks)).values_list(
        "pk", *columns, "subject", "status_detail", "content_purged_at", *COUNTER_FIELDS
    )
    found = {}
    for pk, *values in rows:
        fields, purged_at = values[: len(names)], values[len(names)]
        counters = values[len(names) + 1 :]
        row: dict[str, Any] = {name: v for name, v in zip(names, fields, strict=True) if v}
        row |= content_fields(purged_at)
        counts = Message(**dict(zip(COUNTER_FIELDS, counters, strict=True)))
        row["event_counts"] = message_event_counts(counts)
        found[pk] = row
    return found


def content_fields(content_purged_at: datetime | None) -> dict[str, Any]:
    """`content_kept`, and `content_purged_at` once the message's content went (retention:
    tracking/services/retention.py), as the API's detail and webhook events show them."""
    if content_purged_at is None:
        return {"content_kept": True}
    return {
        "content_kept": False,
        "content_purged_at": content_purged_at.strftime("%Y-%m-%d %H:%M:%S"),
    }


def total_pages(total: int, limit: int) -> int:
    """Pages needed for `total` results; 0 when nothing matches."""
    return math.ceil(total / limit)


def search_results(*, account: Account, query: SearchQuery) -> tuple[int, SearchRows]:
    """`total_results` and the page's rows, with the rows fetched first so that COUNT(*), the
    costly part of a search, runs only when the page cannot tell the total itself: a page
    that is not full is the last one (unless it is empty past the first page), so the total
    is its offset plus its length. The rows may still be streaming when this returns: read
    them to the end or close them."""
    messages = search_queryset(account=account, query=query)
    rows = _page_rows(messages, query)
    wanted = min(query.limit, CHUNK_SIZE)
    first = list(islice(rows, wanted))
    if len(first) < wanted and (first or query.offset == 0):
        total = query.offset + len(first)
    else:
        total = messages.count()
    return total, SearchRows(first, rows)


class SearchRows:
    """The page's rows: those already fetched, then the rest as they come. `close()` releases
    the database cursor at once, whether the rows were read or not."""

    def __init__(self, first: list, rest: Generator):
        self._rows = chain(first, rest)
        self._rest = rest

    def __iter__(self) -> SearchRows:
        return self

    def __next__(self) -> Any:
        return next(self._rows)

    def close(self) -> None:
        self._rest.close()


def search_page(*, account: Account, query: SearchQuery) -> dict[str, Any]:
    """The full response body of the spec for one page."""
    total, rows = search_results(account=account, query=query)
    return {
        "current_page": query.page,
        "total_pages": total_pages(total, query.limit),
        "total_results": total,
        "results": list(rows),
    }
