"""Dates as the API writes and reads them: the spec's `YYYY-MM-DD HH:MM:SS`, in UTC.

(The search query has the database write the same format: tracking/search/query.py UtcText.)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}")
END_OF_DAY = time(23, 59, 59)


def date_text(value: datetime | None) -> str | None:
    """`value` in UTC as the API writes dates; None for no date."""
    return value.astimezone(UTC).strftime(DATE_FORMAT) if value else None


def date_parse(raw: str, *, end: bool) -> datetime | None:
    """A date the API was given, in UTC: `YYYY-MM-DD HH:MM:SS` (or with a "T"), or
    `YYYY-MM-DD`, which is the day's first second, or its last for the `end` of a range.
    None for anything else."""
    raw = raw.strip()
    try:
        if _DATE_TIME.fullmatch(raw):
            return datetime.strptime(raw.replace("T", " "), DATE_FORMAT).replace(tzinfo=UTC)
        if _DATE.fullmatch(raw):
            day_time = END_OF_DAY if end else time.min
            return datetime.combine(date.fromisoformat(raw), day_time, tzinfo=UTC)
    except ValueError:
        pass  # a day or an hour that does not exist
    return None
