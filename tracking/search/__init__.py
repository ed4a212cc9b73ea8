"""Searching tracked emails (`GET /rest/v1/email/search`), shared with the portal."""

from tracking.search.params import (
    AVAILABLE_FIELDS,
    FILTERS,
    MAX_LIMIT,
    PARAMETERS,
    SearchError,
    SearchQuery,
    default_range,
    search_parse,
)
from tracking.search.query import (
    SearchRows,
    content_fields,
    message_rows,
    search_count,
    search_ordering,
    search_page,
    search_queryset,
    search_results,
    search_rows,
    total_pages,
)

__all__ = [
    "AVAILABLE_FIELDS",
    "FILTERS",
    "MAX_LIMIT",
    "PARAMETERS",
    "SearchError",
    "SearchQuery",
    "content_fields",
    "SearchRows",
    "default_range",
    "message_rows",
    "search_count",
    "search_ordering",
    "search_page",
    "search_parse",
    "search_queryset",
    "search_results",
    "search_rows",
    "total_pages",
]
