"""Communication Details: KPI boxes, the per-day chart, the links or email table, and the CSV
export. All of it runs on the search API's own query (tracking.search)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import replace

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from portal.charts import stacked_bars
from portal.decorators import account_required
from portal.forms import CommunicationFilterForm
from tracking.reports import message_kpis, messages_per_day, messages_per_link, with_links
from tracking.search import (
    AVAILABLE_FIELDS,
    SearchError,
    SearchQuery,
    search_count,
    search_ordering,
    search_parse,
    search_queryset,
    search_rows,
)

EMAILS_PER_PAGE = 50
DEFAULT_ORDER = "receive_date_DESC"
# The email columns: (search field to sort by, or None, heading).
EMAIL_COLUMNS = [
    ("receive_date", "Received"),
    ("node_name", "Node"),
    ("link_name", "Link"),
    ("sender_address", "From"),
    ("recipient_address", "To"),
    (None, "Subject"),
    ("disposition", "Status"),
    ("read_disposition", "Read"),
    ("read_first_date", "First read"),
    ("delivery_date", "Delivered"),
    ("conversation_id", "Conversation"),
]
# What the email table shows: the message bodies stay in the database.
EMAIL_TABLE_FIELDS = [
    "message_id", "receive_date", "sender_address", "recipient_address", "subject",
    "disposition", "read_disposition", "read_first_date", "delivery_date", "conversation_id",
    "link__link_name", "link__node__node_name",
]  # fmt: skip


def _search(request: HttpRequest):
    """The filter form and the search query it stands for (None when the input is bad)."""
    form = CommunicationFilterForm(request.GET, account=request.account)
    if not form.is_valid():
        return form, None, []
    params = form.search_params() | {"order": request.GET.get("order") or DEFAULT_ORDER}
    try:
        return form, search_parse(params, now=timezone.now()), []
    except SearchError as error:
        return form, None, error.errors


def _sort_links(request: HttpRequest) -> list[dict]:
    current = request.GET.get("order") or DEFAULT_ORDER
    columns = []
    for field, heading in EMAIL_COLUMNS:
        column = {"heading": heading, "field": field, "direction": None, "url": None}
        if field:
            direction = "DESC" if current == f"{field}_ASC" else "ASC"
            if current in (f"{field}_ASC", f"{field}_DESC"):
                column["direction"] = current.rsplit("_", 1)[1]
            query = request.GET.copy()
            query["order"], query["view"] = f"{field}_{direction}", "emails"
            query.pop("page", None)
            column["url"] = f"?{query.urlencode()}"
        columns.append(column)
    return columns


@account_required
def communications(request: HttpRequest) -> HttpResponse:
    form, query, errors = _search(request)
    view = "emails" if request.GET.get("view") == "emails" else "links"
    context = {"form": form, "errors": errors, "view": view, "columns": _sort_links(request)}
    if query is None:
        return render(request, "portal/communications.html", context, status=400)
    found = search_queryset(account=request.account, query=query)
    context["kpis"] = message_kpis(found)
    context["chart"] = stacked_bars(
        messages_per_day(found, first=form.first_day, last=form.last_day)
    )
    if view == "emails":
        rows = (
            found.select_related("link__node")
            .only(*EMAIL_TABLE_FIELDS)
            .order_by(*search_ordering(query))
        )
    else:
        rows = messages_per_link(found)
    page = Paginator(rows, EMAILS_PER_PAGE).get_page(request.GET.get("page"))
    if view != "emails":
        page.object_list = with_links(list(page.object_list))
    context["page"] = page
    context["querystring"] = _without(request, "page")
    context["filters_only"] = _without(request, "page", "view", "order")
    return render(request, "portal/communications.html", context)


def _without(request: HttpRequest, *names: str) -> str:
    query = request.GET.copy()
    for name in names:
        query.pop(name, None)
    return query.urlencode()


class _Echo:
    def write(self, value: str) -> str:
        return value


@account_required
def communications_export(request: HttpRequest) -> HttpResponse:
    """The filtered set as CSV, streamed row by row so its size costs no memory."""
    form, query, errors = _search(request)
    if query is None:
        messages = errors or [f"{k}: {' '.join(v)}" for k, v in form.errors.items()]
        return HttpResponse("\n".join(messages), status=400, content_type="text/plain")
    rows = _all_rows(request.account, query)
    filename = f"emails-{form.first_day:%Y%m%d}-{form.last_day:%Y%m%d}.csv"
    response = StreamingHttpResponse(_csv_lines(rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _all_rows(account, query: SearchQuery) -> Iterator[dict[str, str]]:
    """Every row of the search as one page: one streamed query (a server-side cursor), so mail
    arriving during the export cannot shift rows between pages. Rows that arrive after the
    count are left for the next export."""
    total = search_count(account=account, query=query)
    if total:
        yield from search_rows(account=account, query=replace(query, page=1, limit=total))


# A cell starting with one of these is a formula to a spreadsheet (CSV injection, OWASP).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return f"'{value}" if value.startswith(FORMULA_STARTS) else value


def _csv_lines(rows) -> Iterator[str]:
    # The search API's fields, in the spec's order; a field a message lacks is left empty.
    writer = csv.DictWriter(_Echo(), fieldnames=AVAILABLE_FIELDS)
    yield writer.writeheader()
    for row in rows:
        yield writer.writerow({name: _cell(value) for name, value in row.items()})
