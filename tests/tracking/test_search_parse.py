"""Parsing and validating the search parameters (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from django.http import QueryDict

from tracking.search import AVAILABLE_FIELDS, SearchError, search_parse

NOW = datetime(2022, 3, 15, 10, 30, tzinfo=UTC)


FORMAT = "must be a date and time in the format YYYY-MM-DD HH:MM:SS"
PAGE = "page must be a whole number from 1 to 1000000000"
DISPOSITIONS = (
    "received, sent, queued, undeliverable, noMxRecord, no_rules, rule_error, received_bounced, "
    "expired"
)


def errors_of(params) -> list[str]:
    with pytest.raises(SearchError) as caught:
        search_parse(params, now=NOW)
    return caught.value.errors


def test_defaults_are_the_specs():
    query = search_parse({}, now=NOW)
    assert query.start == datetime(2022, 3, 1, 0, 0, 0, tzinfo=UTC)
    assert query.end == datetime(2022, 3, 15, 23, 59, 59, tzinfo=UTC)
    assert query.fields == list(AVAILABLE_FIELDS)
    assert query.order == [("receive_date", False), ("delivery_date", True)]
    assert (query.page, query.limit, query.offset, query.filters) == (1, 20000, 0, {})


def test_defaults_follow_utc_not_the_callers_offset():
    late_in_tokyo = datetime(2022, 3, 31, 23, 30, tzinfo=UTC)
    query = search_parse({}, now=late_in_tokyo)
    assert query.start == datetime(2022, 3, 1, tzinfo=UTC)
    assert query.end == datetime(2022, 3, 31, 23, 59, 59, tzinfo=UTC)


def test_dates_in_the_specs_format_are_utc():
    query = search_parse(
        {"start_date": "2021-01-01 00:00:00", "end_date": "2021-12-31 23:59:59"}, now=NOW
    )
    assert query.start == datetime(2021, 1, 1, tzinfo=UTC)
    assert query.end == datetime(2021, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_a_date_alone_means_the_whole_day():
    query = search_parse({"start_date": "2021-06-01", "end_date": "2021-06-30"}, now=NOW)
    assert query.start == datetime(2021, 6, 1, 0, 0, 0, tzinfo=UTC)
    assert query.end == datetime(2021, 6, 30, 23, 59, 59, tzinfo=UTC)


def test_filters_are_parsed_and_uuids_become_uuids():
    message_id = uuid.uuid4()
    params = {
        "message_id": str(message_id),
        "conversation_id": str(message_id).upper(),
        "node_id": "abc123",
        "node_name": "Bobs automotive",
        "node_type": "Dealer",
        "link_id": "xyz789",
        "link_name": "Honda Civic",
        "link_type": "Vehicle",
        "sender_address": "bob@bob.com",
        "recipient_address": "bob@customer.com",
        "proxy_address": "hn7m890cfqt234@example.com",
        "disposition": "noMxRecord",
        "read_disposition": "read",
    }
    query = search_parse(params, now=NOW)
    assert query.filters == {
        **params,
        "message_id": message_id,
        "conversation_id": message_id,
    }


def test_fields_and_order_lists_are_parsed():
    query = search_parse(
        {"fields": "link_id, message_id,link_id", "order": "link_name_DESC,receive_date_asc"},
        now=NOW,
    )
    assert query.fields == ["link_id", "message_id"]
    assert query.order == [("link_name", True), ("receive_date", False)]


def test_page_and_limit_set_the_offset():
    query = search_parse({"page": "3", "limit": "100"}, now=NOW)
    assert (query.page, query.limit, query.offset) == (3, 100, 200)


def test_empty_values_count_as_left_out():
    query = search_parse({"link_id": "", "fields": " ", "page": "", "start_date": ""}, now=NOW)
    assert query == search_parse({}, now=NOW)


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"start_date": "2021-01-01 25:00:00"}, f"start_date {FORMAT}"),
        ({"end_date": "31/12/2021"}, f"end_date {FORMAT}"),
        ({"start_date": "2021-02-30"}, f"start_date {FORMAT}"),
        (
            {"start_date": "2021-02-01", "end_date": "2021-01-31"},
            "end_date must not be before start_date",
        ),
        ({"fields": "message_id,subject"}, "fields: subject is not an available field"),
        ({"order": "subject_ASC"}, "order: subject is not an available field"),
        ({"order": "receive_date"}, "order: receive_date needs an _ASC or _DESC suffix"),
        (
            {"order": "receive_date_UP"},
            "order: receive_date_UP must be a field name ending in _ASC or _DESC",
        ),
        ({"order": "link_id_ASC,link_id_DESC"}, "order: link_id is given more than once"),
        ({"order": "_DESC"}, "order: _DESC must be a field name ending in _ASC or _DESC"),
        ({"start_date": "２０２１-01-01"}, f"start_date {FORMAT}"),
        ({"page": "0"}, PAGE),
        ({"page": "-1"}, PAGE),
        ({"page": "two"}, PAGE),
        ({"page": "1.5"}, PAGE),
        ({"page": "99999999999999999999"}, PAGE),
        ({"limit": "0"}, "limit must be a whole number from 1 to 20000"),
        ({"limit": "20001"}, "limit must be a whole number from 1 to 20000"),
        ({"message_id": "abc123"}, "message_id is not a valid UUID"),
        ({"conversation_id": "nope"}, "conversation_id is not a valid UUID"),
        ({"disposition": "delivered"}, f"disposition must be one of {DISPOSITIONS}"),
        ({"read_disposition": "opened"}, "read_disposition must be one of unread, read"),
        ({"link": "xyz789"}, "link is not a search parameter"),
        ({"link_id": "a\x00b"}, "link_id cannot contain NUL characters"),
    ],
)
def test_each_bad_parameter_is_named(params, error):
    assert errors_of(params) == [error]


def test_every_problem_is_reported_at_once():
    errors = errors_of(
        {"start_date": "yesterday", "fields": "nope", "order": "x_ASC", "page": "0", "limit": "x"}
    )
    assert len(errors) == 5


def test_a_parameter_given_twice_is_refused():
    assert errors_of(QueryDict("link_id=a&link_id=b")) == ["link_id must be given only once"]
