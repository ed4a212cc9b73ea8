"""Running a search: the account's filtered messages, counted, ordered, paged and shaped into
the spec's result rows without building model instances."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import F, OrderBy, QuerySet

from tracking.models import Account, Message
from tracking.search.params import DATE_FORMAT, SearchQuery

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
NULLABLE = frozenset({"delivery_date", "conversation_id", "read_first_date"})
# Rows are fetched from the database this many at a time (a server-side cursor on PostgreSQL).
CHUNK_SIZE = 2000


def _date_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime(DATE_FORMAT)


CONVERTERS: dict[str, Callable[[Any], str]] = {
    "message_id": str,
    "conversation_id": str,
    "receive_date": _date_text,
    "delivery_date": _date_text,
    "read_first_date": _date_text,
}


def search_queryset(*, account: Account, query: SearchQuery) -> QuerySet[Message]:
    """The account's messages received in the query's range that match all its filters,
    unordered: the one query builder of the search API and the portal's Communication
    Details (KPIs, charts, CSV)."""
    messages = Message.objects.for_account(account).filter(
        receive_date__gte=query.start,
        # `end` is inclusive to the second, so anything before the next second is in.
        receive_date__lt=query.end + timedelta(seconds=1),
    )
    if query.filters:
        messages = messages.filter(**{PATHS[name]: value for name, value in query.filters.items()})
    return messages


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
    paths = [PATHS[name] for name in query.fields]
    page = (
        search_queryset(account=account, query=query)
        .order_by(*search_ordering(query))[query.offset : query.offset + query.limit]
        .values_list(*paths)
    )
    shape = [(name, CONVERTERS.get(name)) for name in query.fields]
    for values in page.iterator(chunk_size=CHUNK_SIZE):
        row = {}
        for (name, convert), value in zip(shape, values, strict=True):
            if value is None or value == "":
                continue
            row[name] = convert(value) if convert else value
        yield row


def total_pages(total: int, limit: int) -> int:
    """Pages needed for `total` results; 0 when nothing matches."""
    return math.ceil(total / limit)


def search_page(*, account: Account, query: SearchQuery) -> dict[str, Any]:
    """The full response body of the spec for one page."""
    total = search_count(account=account, query=query)
    results = list(search_rows(account=account, query=query)) if total > query.offset else []
    return {
        "current_page": query.page,
        "total_pages": total_pages(total, query.limit),
        "total_results": total,
        "results": results,
    }
