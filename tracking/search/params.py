"""The search endpoint's query parameters: what they may be, their defaults, and parsing.

`search_parse` turns the raw parameters of `GET /rest/v1/email/search` (or of a portal form)
into a `SearchQuery`, or raises `SearchError` listing every problem at once.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

from django.utils import timezone

from tracking.dates import date_parse
from tracking.models import Disposition, ReadDisposition

# The spec's "Available fields", in its table's order (also the default `fields`).
AVAILABLE_FIELDS: tuple[str, ...] = (
    "message_id",
    "receive_date",
    "delivery_date",
    "node_id",
    "node_name",
    "node_type",
    "link_id",
    "link_name",
    "link_type",
    "sender_address",
    "sender_name",
    "recipient_address",
    "recipient_name",
    "proxy_address",
    "proxy_name",
    "conversation_id",
    "disposition",
    "read_disposition",
    "read_first_date",
)

# The spec's exact-match filters. Values are compared exactly (case and all).
TEXT_FILTERS = (
    "node_id",
    "node_name",
    "node_type",
    "link_id",
    "link_name",
    "link_type",
    "sender_address",
    "recipient_address",
    "proxy_address",
)
UUID_FILTERS = ("message_id", "conversation_id")
CHOICE_FILTERS: dict[str, tuple[str, ...]] = {
    "disposition": tuple(Disposition.values),
    "read_disposition": tuple(ReadDisposition.values),
}
FILTERS = ("message_id", *TEXT_FILTERS, "conversation_id", *CHOICE_FILTERS)
PARAMETERS = frozenset({"start_date", "end_date", *FILTERS, "fields", "order", "page", "limit"})

DEFAULT_ORDER: tuple[tuple[str, bool], ...] = (("receive_date", False), ("delivery_date", True))
MAX_LIMIT = 20000
# Keeps (page - 1) * limit far inside a 64-bit OFFSET.
MAX_PAGE = 1_000_000_000
_NUMBER = re.compile(r"[0-9]{1,12}")


class SearchError(Exception):
    """Invalid search parameters; `errors` holds one sentence per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class SearchQuery:
    """A validated search. `start` and `end` are inclusive, at one-second resolution: a
    message received at 23:59:59.7 is inside an `end` of 23:59:59."""

    start: datetime
    end: datetime
    filters: dict[str, Any] = field(default_factory=dict)
    fields: list[str] = field(default_factory=lambda: list(AVAILABLE_FIELDS))
    order: list[tuple[str, bool]] = field(default_factory=lambda: list(DEFAULT_ORDER))
    page: int = 1
    limit: int = MAX_LIMIT

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


def default_range(now: datetime) -> tuple[datetime, datetime]:
    """The spec's defaults: the first day of the current month at midnight to the end of
    today (23:59:59), UTC."""
    today = now.astimezone(UTC).date()
    start = datetime.combine(today.replace(day=1), time.min, tzinfo=UTC)
    end = datetime.combine(today, time(23, 59, 59), tzinfo=UTC)
    return start, end


def search_parse(params: Mapping[str, str], *, now: datetime | None = None) -> SearchQuery:
    """Validate the search parameters of the spec, with its defaults for those left out or
    left empty. Raises SearchError with every problem found."""
    errors: list[str] = []
    values = _single_values(params, errors)
    default_start, default_end = default_range(now or timezone.now())
    start = _parse_date(values, "start_date", default_start, errors, end=False)
    end = _parse_date(values, "end_date", default_end, errors, end=True)
    if start and end and end < start:
        errors.append("end_date must not be before start_date")
    filters = _parse_filters(values, errors)
    fields = _parse_fields(values.get("fields", ""), errors)
    order = _parse_order(values.get("order", ""), errors)
    page = _parse_number(values, "page", 1, MAX_PAGE, errors)
    limit = _parse_number(values, "limit", MAX_LIMIT, MAX_LIMIT, errors)
    if errors:
        raise SearchError(errors)
    return SearchQuery(
        start=start, end=end, filters=filters, fields=fields, order=order, page=page, limit=limit
    )


def _single_values(params: Mapping[str, str], errors: list[str]) -> dict[str, str]:
    """One stripped value per known parameter; empty values count as left out. Unknown
    parameters are refused: a misspelt filter must not silently widen a search."""
    getlist = getattr(params, "getlist", None)
    values: dict[str, str] = {}
    for name in params:
        if name not in PARAMETERS:
            errors.append(f"{name} is not a search parameter")
            continue
        if getlist is not None and len(getlist(name)) > 1:
            errors.append(f"{name} must be given only once")
            continue
        value = str(params[name]).strip()
        if "\x00" in value:
            errors.append(f"{name} cannot contain NUL characters")
        elif value:
            values[name] = value
    return values


def _parse_date(
    values: dict[str, str], name: str, default: datetime, errors: list[str], *, end: bool
) -> datetime | None:
    raw = values.get(name)
    if raw is None:
        return default
    if (parsed := date_parse(raw, end=end)) is not None:
        return parsed
    errors.append(f"{name} must be a date and time in the format YYYY-MM-DD HH:MM:SS")
    return None


def _parse_filters(values: dict[str, str], errors: list[str]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for name in FILTERS:
        raw = values.get(name)
        if raw is None:
            continue
        if name in UUID_FILTERS:
            try:
                filters[name] = uuid.UUID(raw)
            except ValueError:
                errors.append(f"{name} is not a valid UUID")
        elif name in CHOICE_FILTERS:
            if raw in CHOICE_FILTERS[name]:
                filters[name] = raw
            else:
                errors.append(f"{name} must be one of {', '.join(CHOICE_FILTERS[name])}")
        else:
            filters[name] = raw
    return filters


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _parse_fields(raw: str, errors: list[str]) -> list[str]:
    if not raw:
        return list(AVAILABLE_FIELDS)
    fields: list[str] = []
    for name in _split(raw):
        if name not in AVAILABLE_FIELDS:
            errors.append(f"fields: {name} is not an available field")
        elif name not in fields:
            fields.append(name)
    return fields


def _parse_order(raw: str, errors: list[str]) -> list[tuple[str, bool]]:
    if not raw:
        return list(DEFAULT_ORDER)
    order: list[tuple[str, bool]] = []
    for item in _split(raw):
        name, _, suffix = item.rpartition("_")
        if not name or suffix.upper() not in ("ASC", "DESC"):
            if item in AVAILABLE_FIELDS:
                errors.append(f"order: {item} needs an _ASC or _DESC suffix")
            else:
                errors.append(f"order: {item} must be a field name ending in _ASC or _DESC")
        elif name not in AVAILABLE_FIELDS:
            errors.append(f"order: {name} is not an available field")
        elif any(name == seen for seen, _ in order):
            errors.append(f"order: {name} is given more than once")
        else:
            order.append((name, suffix.upper() == "DESC"))
    return order


def _parse_number(
    values: dict[str, str], name: str, default: int, maximum: int, errors: list[str]
) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    if _NUMBER.fullmatch(raw) and 1 <= int(raw) <= maximum:
        return int(raw)
    errors.append(f"{name} must be a whole number from 1 to {maximum}")
    return default
