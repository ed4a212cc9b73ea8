"""GET /rest/v1/email/search: a thin view over tracking.search that streams its JSON.

Parameters are validated before the first byte is sent, so every bad query is still a 400 with
`{"errors": [...]}`; then the body is written as the rows come from the database, so a page of
20000 results never sits whole in memory (neither as rows nor as JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import islice

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers
from rest_framework.views import APIView

from tracking.models import Disposition
from tracking.search import (
    AVAILABLE_FIELDS,
    FILTERS,
    SearchError,
    SearchQuery,
    SearchRows,
    search_parse,
    search_results,
    total_pages,
)

CHOICES = {"disposition": list(Disposition.values), "read_disposition": ["read", "unread"]}
# Rows serialised per chunk written to the client.
ROWS_PER_CHUNK = 500
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

_PARAMETERS = [
    OpenApiParameter("start_date", OpenApiTypes.STR, description="YYYY-MM-DD HH:MM:SS (UTC)"),
    OpenApiParameter("end_date", OpenApiTypes.STR, description="YYYY-MM-DD HH:MM:SS (UTC)"),
    *[
        OpenApiParameter(name, OpenApiTypes.STR, description="exact match", enum=CHOICES.get(name))
        for name in FILTERS
    ],
    OpenApiParameter("fields", OpenApiTypes.STR, description="comma-separated field names"),
    OpenApiParameter(
        "order", OpenApiTypes.STR, description="e.g. receive_date_ASC,delivery_date_DESC"
    ),
    OpenApiParameter("page", OpenApiTypes.INT, description="from 1"),
    OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 20000"),
]
_RESPONSE = inline_serializer(
    "EmailSearchPage",
    {
        "current_page": serializers.IntegerField(),
        "total_pages": serializers.IntegerField(),
        "total_results": serializers.IntegerField(),
        "results": serializers.ListField(
            child=inline_serializer(
                "EmailSearchResult",
                {name: serializers.CharField(required=False) for name in AVAILABLE_FIELDS},
            )
        ),
    },
)


class EmailSearchView(APIView):
    @extend_schema(parameters=_PARAMETERS, responses={200: _RESPONSE}, operation_id="email_search")
    def get(self, request):
        """Search the account's tracked emails (the spec's "Searching tracked emails")."""
        try:
            query = search_parse(request.query_params)
        except SearchError as exc:
            raise exceptions.ValidationError(exc.errors) from exc
        account = request.user.account
        total, rows = search_results(account=account, query=query)
        return StreamingHttpResponse(_PageBody(query, total, rows), content_type="application/json")


class _PageBody:
    """The streamed body. Django calls `close()` when the response ends, read to the end or
    not (a client gone mid-page, a HEAD request): the rows' cursor is released then."""

    def __init__(self, query: SearchQuery, total: int, rows: SearchRows):
        self.query, self.total, self.rows = query, total, rows

    def __iter__(self) -> Iterator[bytes]:
        head = {
            "current_page": self.query.page,
            "total_pages": total_pages(self.total, self.query.limit),
            "total_results": self.total,
        }
        yield (_encode(head)[:-1] + ',"results":[').encode()
        separator = ""
        while chunk := list(islice(self.rows, ROWS_PER_CHUNK)):
            # One encoder call per chunk: the list's JSON without its brackets.
            yield (separator + _encode(chunk)[1:-1]).encode()
            separator = ","
        yield b"]}"

    def close(self) -> None:
        self.rows.close()
