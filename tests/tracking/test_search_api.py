"""GET /rest/v1/email/search: the spec's search, through the API."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import pytest
import requests
import time_machine
from django.db import connection

from tests.factories import LinkFactory, MessageFactory, NodeFactory
from tracking.models import Message
from tracking.search import search_page, search_parse, search_queryset, search_results

pytestmark = pytest.mark.django_db

URL = "/rest/v1/email/search"
YEAR_2021 = {"start_date": "2021-01-01 00:00:00", "end_date": "2021-12-31 23:59:59"}


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


def body(response) -> dict:
    if response.streaming:
        return json.loads(b"".join(response.streaming_content))
    return response.json()


def search(actor, **params) -> dict:
    response = actor.client.get(URL, params)
    assert response.status_code == 200, body(response)
    assert response["Content-Type"] == "application/json"
    return body(response)


def ids(page: dict) -> list[str]:
    return [row["message_id"] for row in page["results"]]


@pytest.fixture
def civic(alice):
    node = NodeFactory(
        account=alice.account, node_id="abc123", node_name="Bobs automotive", node_type="Dealer"
    )
    return LinkFactory(node=node, link_id="xyz789", link_name="Honda Civic", link_type="Vehicle")


def spec_message(link, **fields) -> Message:
    values = {
        "receive_date": at("2021-06-26 14:49:27"),
        "delivery_date": at("2021-06-26 14:52:40"),
        "sender_address": "bob@bob.com",
        "sender_name": "Bob Bob",
        "recipient_address": "bob@customer.com",
        "recipient_name": "Billy Bob",
        "proxy_address": "hn7m890cfqt234@example.com",
        "proxy_name": "Company Name",
        "disposition": "sent",
        "read_disposition": "unread",
        **fields,
    }
    return MessageFactory(link=link, **values)


def test_the_specs_example_request_gets_the_specs_response(alice, civic):
    first = spec_message(civic)
    for day in range(2, 6):
        spec_message(civic, receive_date=at(f"2021-07-0{day} 10:00:00"))
    spec_message(civic, receive_date=at("2022-01-01 00:00:00"))  # next year
    spec_message(civic, disposition="queued", delivery_date=None)

    page = search(alice, **YEAR_2021, link_id="xyz789", page=1, limit=1, disposition="sent")

    assert page == {
        "current_page": 1,
        "total_pages": 5,
        "total_results": 5,
        "results": [
            {
                "message_id": str(first.message_id),
                "receive_date": "2021-06-26 14:49:27",
                "delivery_date": "2021-06-26 14:52:40",
                "node_id": "abc123",
                "node_name": "Bobs automotive",
                "node_type": "Dealer",
                "link_id": "xyz789",
                "link_name": "Honda Civic",
                "link_type": "Vehicle",
                "sender_address": "bob@bob.com",
                "sender_name": "Bob Bob",
                "recipient_address": "bob@customer.com",
                "recipient_name": "Billy Bob",
                "proxy_address": "hn7m890cfqt234@example.com",
                "proxy_name": "Company Name",
                "disposition": "sent",
                "read_disposition": "unread",
            }
        ],
    }


def test_conversation_and_read_date_are_returned_when_a_message_has_them(alice, civic):
    conversation = uuid.uuid4()
    spec_message(
        civic,
        conversation_id=conversation,
        read_disposition="read",
        read_first_date=at("2021-06-27 08:00:01"),
    )
    [row] = search(alice, **YEAR_2021)["results"]
    assert row["conversation_id"] == str(conversation)
    assert row["read_disposition"] == "read"
    assert row["read_first_date"] == "2021-06-27 08:00:01"
    assert list(row)[-4:] == [
        "conversation_id",
        "disposition",
        "read_disposition",
        "read_first_date",
    ]


def test_fields_a_message_does_not_have_are_left_out(alice):
    node = NodeFactory(account=alice.account, node_type="")
    link = LinkFactory(node=node, link_type="")
    spec_message(link, delivery_date=None, proxy_address="", proxy_name="", sender_name="")
    [row] = search(alice, **YEAR_2021)["results"]
    absent = {
        "delivery_date",
        "node_type",
        "link_type",
        "sender_name",
        "proxy_address",
        "proxy_name",
        "conversation_id",
        "read_first_date",
    }
    assert absent.isdisjoint(row)
    assert None not in row.values() and "" not in row.values()


FILTER_CASES = {
    "node_id": "abc123",
    "node_name": "Bobs automotive",
    "node_type": "Dealer",
    "link_id": "xyz789",
    "link_name": "Honda Civic",
    "link_type": "Vehicle",
    "sender_address": "bob@bob.com",
    "recipient_address": "bob@customer.com",
    "proxy_address": "hn7m890cfqt234@example.com",
    "disposition": "sent",
    "read_disposition": "unread",
}


@pytest.mark.parametrize("name", [*FILTER_CASES, "message_id", "conversation_id"])
def test_every_filter_matches_exactly(alice, civic, name):
    wanted = spec_message(civic, conversation_id=uuid.uuid4())
    other_node = NodeFactory(
        account=alice.account, node_id="abc1234", node_name="Bobs Automotive", node_type="Deal"
    )
    other_link = LinkFactory(
        node=other_node, link_id="XYZ789", link_name="Honda civic", link_type="Vehicles"
    )
    spec_message(
        other_link,
        sender_address="Bob@bob.com",
        recipient_address="bob@customer.co",
        proxy_address="hn7m890cfqt235@example.com",
        conversation_id=uuid.uuid4(),
        disposition="queued",
        read_disposition="read",
    )
    value = str(getattr(wanted, name)) if name in ("message_id", "conversation_id") else None
    page = search(alice, **YEAR_2021, **{name: value or FILTER_CASES[name]})
    assert ids(page) == [str(wanted.message_id)]


def test_several_filters_combine(alice, civic):
    wanted = spec_message(civic)
    spec_message(civic, disposition="queued")
    spec_message(civic, recipient_address="someone@else.example")
    page = search(
        alice,
        **YEAR_2021,
        link_id="xyz789",
        disposition="sent",
        recipient_address="bob@customer.com",
    )
    assert ids(page) == [str(wanted.message_id)]


def test_the_default_range_is_this_month_until_the_end_of_today(alice, civic):
    before = spec_message(civic, receive_date=at("2022-02-28 23:59:59"))
    first = spec_message(civic, receive_date=at("2022-03-01 00:00:00"))
    last = spec_message(civic, receive_date=at("2022-03-15 23:59:59") + timedelta(microseconds=9))
    after = spec_message(civic, receive_date=at("2022-03-16 00:00:00"))
    with time_machine.travel(at("2022-03-15 09:00:00"), tick=False):
        page = search(alice)
    assert ids(page) == [str(first.message_id), str(last.message_id)]
    assert {str(before.message_id), str(after.message_id)}.isdisjoint(ids(page))


def test_the_date_range_is_inclusive_to_the_second(alice, civic):
    inside = [
        spec_message(civic, receive_date=at("2021-06-01 10:00:00")),
        spec_message(civic, receive_date=at("2021-06-01 10:00:05") + timedelta(microseconds=5)),
    ]
    spec_message(civic, receive_date=at("2021-06-01 09:59:59"))
    spec_message(civic, receive_date=at("2021-06-01 10:00:06"))
    page = search(alice, start_date="2021-06-01 10:00:00", end_date="2021-06-01 10:00:05")
    assert ids(page) == [str(m.message_id) for m in inside]


def test_the_widest_dates_are_answered(alice, civic):
    wanted = spec_message(civic)
    page = search(alice, start_date="0001-01-01 00:00:00", end_date="9999-12-31 23:59:59")
    assert ids(page) == [str(wanted.message_id)]


def test_a_date_without_a_time_covers_the_whole_day(alice, civic):
    wanted = spec_message(civic, receive_date=at("2021-06-01 23:59:59"))
    spec_message(civic, receive_date=at("2021-06-02 00:00:00"))
    assert ids(search(alice, start_date="2021-06-01", end_date="2021-06-01")) == [
        str(wanted.message_id)
    ]


def test_fields_limit_the_keys_in_the_order_asked(alice, civic):
    spec_message(civic)
    page = search(alice, **YEAR_2021, fields="link_id,receive_date,read_first_date")
    assert page["results"] == [{"link_id": "xyz789", "receive_date": "2021-06-26 14:49:27"}]
    assert list(page["results"][0]) == ["link_id", "receive_date"]


def test_default_order_is_receive_date_ascending_then_delivery_date_descending(alice, civic):
    same_time = at("2021-06-01 10:00:00")
    early_delivery = spec_message(
        civic, receive_date=same_time, delivery_date=at("2021-06-01 10:01:00")
    )
    late_delivery = spec_message(
        civic, receive_date=same_time, delivery_date=at("2021-06-01 10:05:00")
    )
    undelivered = spec_message(civic, receive_date=same_time, delivery_date=None)
    earlier = spec_message(civic, receive_date=at("2021-05-01 10:00:00"))
    assert ids(search(alice, **YEAR_2021)) == [
        str(m.message_id) for m in (earlier, undelivered, late_delivery, early_delivery)
    ]


def test_order_takes_several_fields_with_their_directions(alice, civic):
    other = LinkFactory(node=civic.node, link_name="Accord")
    a = spec_message(civic, receive_date=at("2021-06-01 10:00:00"))
    b = spec_message(civic, receive_date=at("2021-06-02 10:00:00"))
    c = spec_message(other, receive_date=at("2021-06-03 10:00:00"))
    d = spec_message(other, receive_date=at("2021-06-04 10:00:00"))
    page = search(alice, **YEAR_2021, order="link_name_DESC,receive_date_DESC")
    assert ids(page) == [str(m.message_id) for m in (b, a, d, c)]
    page = search(alice, **YEAR_2021, order="link_name_ASC,receive_date_ASC")
    assert ids(page) == [str(m.message_id) for m in (c, d, a, b)]


def test_absent_dates_sort_last_ascending_and_first_descending(alice, civic):
    read = spec_message(civic, read_first_date=at("2021-06-05 00:00:00"))
    unread = spec_message(civic)
    assert ids(search(alice, **YEAR_2021, order="read_first_date_ASC")) == [
        str(read.message_id),
        str(unread.message_id),
    ]
    assert ids(search(alice, **YEAR_2021, order="read_first_date_DESC")) == [
        str(unread.message_id),
        str(read.message_id),
    ]


def test_ties_are_broken_by_arrival_so_pages_never_overlap(alice, civic):
    messages = [spec_message(civic) for _ in range(7)]
    seen = []
    for page in (1, 2, 3):
        seen += ids(search(alice, **YEAR_2021, order="disposition_ASC", limit=3, page=page))
    assert seen == [str(m.message_id) for m in messages]


def test_pages_split_the_results_and_report_the_totals(alice, civic):
    messages = [
        spec_message(civic, receive_date=at(f"2021-06-0{day} 10:00:00")) for day in range(1, 6)
    ]
    pages = [search(alice, **YEAR_2021, limit=2, page=page) for page in (1, 2, 3, 4)]
    assert [p["current_page"] for p in pages] == [1, 2, 3, 4]
    assert {(p["total_pages"], p["total_results"]) for p in pages} == {(3, 5)}
    assert [len(p["results"]) for p in pages] == [2, 2, 1, 0]
    assert sum((ids(p) for p in pages), []) == [str(m.message_id) for m in messages]


def test_no_match_is_zero_pages_and_an_empty_list(alice, civic):
    spec_message(civic)
    assert search(alice, **YEAR_2021, link_id="nope", page=2) == {
        "current_page": 2,
        "total_pages": 0,
        "total_results": 0,
        "results": [],
    }


def test_the_last_allowed_page_is_answered_not_overflowed(alice, civic):
    spec_message(civic)
    page = search(alice, **YEAR_2021, page=1_000_000_000, limit=20000)
    assert (page["current_page"], page["total_results"], page["results"]) == (1_000_000_000, 1, [])


def test_only_the_callers_messages_are_searched(alice, bob, civic):
    mine = spec_message(civic)
    bobs_node = NodeFactory(account=bob.account, node_id="abc123")
    bobs_link = LinkFactory(node=bobs_node, link_id="xyz789")
    theirs = spec_message(bobs_link)
    assert ids(search(alice, **YEAR_2021)) == [str(mine.message_id)]
    assert ids(search(alice, **YEAR_2021, node_id="abc123", link_id="xyz789")) == [
        str(mine.message_id)
    ]
    assert search(alice, **YEAR_2021, message_id=str(theirs.message_id))["total_results"] == 0
    assert ids(search(bob, **YEAR_2021)) == [str(theirs.message_id)]


def test_bad_queries_are_400_with_every_error(alice):
    response = alice.client.get(
        URL,
        {
            "start_date": "2021-13-01 00:00:00",
            "end_date": "2021-01-01",
            "fields": "message_id,colour",
            "order": "receive_date,colour_DESC",
            "page": "0",
            "limit": "20001",
            "message_id": "not-a-uuid",
            "disposition": "delivered",
            "linkid": "xyz789",
        },
    )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "linkid is not a search parameter",
        "start_date must be a date and time in the format YYYY-MM-DD HH:MM:SS",
        "message_id is not a valid UUID",
        "disposition must be one of received, sent, queued, undeliverable, noMxRecord, "
        "no_rules, rule_error, received_bounced, expired",
        "fields: colour is not an available field",
        "order: receive_date needs an _ASC or _DESC suffix",
        "order: colour is not an available field",
        "page must be a whole number from 1 to 1000000000",
        "limit must be a whole number from 1 to 20000",
    ]


def test_end_before_start_is_a_400(alice):
    response = alice.client.get(URL, {"start_date": "2021-02-01", "end_date": "2021-01-31"})
    assert response.status_code == 400
    assert response.json() == {"errors": ["end_date must not be before start_date"]}


def test_a_nul_character_is_a_400_not_a_server_error(alice):
    response = alice.client.get(URL + "?sender_address=a%00b")
    assert response.status_code == 400
    assert response.json() == {"errors": ["sender_address cannot contain control characters"]}


def test_a_head_request_is_answered_without_leaving_a_transaction_open(alice, civic):
    bulk_messages(civic, 2500)
    savepoints = list(connection.savepoint_ids)
    response = alice.client.head(URL, YEAR_2021)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b""
    assert connection.savepoint_ids == savepoints


def test_searching_needs_credentials(alice):
    response = alice.client.__class__().get(URL)
    assert response.status_code == 401
    assert "errors" in response.json()


def test_a_page_costs_a_bounded_number_of_queries(alice, civic, django_assert_max_num_queries):
    other = LinkFactory(node=NodeFactory(account=alice.account))
    for day in range(1, 21):
        spec_message(civic if day % 2 else other, receive_date=at(f"2021-06-{day:02} 10:00:00"))
    alice.credential.touch()  # last_used is fresh, so authentication is one query
    # authentication, the page, the count
    with django_assert_max_num_queries(3):
        page = search(alice, **YEAR_2021, order="node_name_ASC,link_id_DESC", limit=5, page=2)
    assert (page["total_results"], page["total_pages"], len(page["results"])) == (20, 4, 5)


def test_a_page_that_is_not_full_needs_no_count(alice, civic, django_assert_num_queries):
    for day in range(1, 8):
        spec_message(civic, receive_date=at(f"2021-06-{day:02} 10:00:00"))
    alice.credential.touch()
    with django_assert_num_queries(2):  # authentication and the page
        page = search(alice, **YEAR_2021, limit=5, page=2)
    assert (page["total_results"], page["total_pages"], len(page["results"])) == (7, 2, 2)
    # Past the end: the count says how far the end is (the credential is cached by now).
    with django_assert_num_queries(2):
        page = search(alice, **YEAR_2021, limit=5, page=3)
    assert (page["total_results"], page["total_pages"], page["results"]) == (7, 2, [])


def test_node_and_link_filters_cost_one_small_query_first(alice, civic, django_assert_num_queries):
    spec_message(civic)
    alice.credential.touch()
    with django_assert_num_queries(3):  # authentication, the matching links, the page
        assert search(alice, **YEAR_2021, node_id="abc123", limit=100)["total_results"] == 1
    with django_assert_num_queries(1):  # no such link: no message query at all
        assert search(alice, **YEAR_2021, link_id="nope", limit=100)["total_results"] == 0


def test_a_deep_page_is_the_same_as_walking_the_pages(alice, civic):
    for n in range(12):
        spec_message(
            civic,
            receive_date=at(f"2021-06-{n // 3 + 1:02} 10:00:00"),
            delivery_date=None if n % 3 == 0 else at(f"2021-06-20 10:00:{n:02}"),
        )
    everything = ids(search(alice, **YEAR_2021))
    pages = [ids(search(alice, **YEAR_2021, limit=5, page=page)) for page in (1, 2, 3)]
    assert sum(pages, []) == everything
    by_link = ids(search(alice, **YEAR_2021, link_id="xyz789", order="delivery_date_ASC"))
    assert (
        ids(
            search(alice, **YEAR_2021, link_id="xyz789", order="delivery_date_ASC", limit=4, page=3)
        )
        == by_link[8:]
    )


def test_dates_are_cut_to_the_second_not_rounded(alice, civic):
    spec_message(
        civic,
        receive_date=at("2021-06-26 14:49:27") + timedelta(microseconds=999999),
        read_first_date=at("2021-06-30 23:59:59") + timedelta(microseconds=500000),
    )
    [row] = search(alice, **YEAR_2021, fields="receive_date,read_first_date")["results"]
    assert row == {"receive_date": "2021-06-26 14:49:27", "read_first_date": "2021-06-30 23:59:59"}


def bulk_messages(link, count: int) -> None:
    start = at("2021-06-01 00:00:00")
    Message.objects.bulk_create(
        Message(
            account=link.account,
            link=link,
            sender_address="bob@bob.com",
            recipient_address=f"r{n}@customer.com",
            receive_date=start + timedelta(seconds=n),
        )
        for n in range(count)
    )


def test_a_large_page_is_streamed_in_chunks(alice, civic):
    bulk_messages(civic, 2500)
    response = alice.client.get(URL, {**YEAR_2021, "fields": "recipient_address"})
    assert response.streaming
    chunks = list(response.streaming_content)
    assert len(chunks) >= 6  # the head, one chunk per 500 rows, the tail
    page = json.loads(b"".join(chunks))
    assert (page["total_results"], page["total_pages"], len(page["results"])) == (2500, 1, 2500)
    assert page["results"][0] == {"recipient_address": "r0@customer.com"}
    assert page["results"][-1] == {"recipient_address": "r2499@customer.com"}


@pytest.mark.django_db(transaction=True)
def test_a_large_page_streams_through_a_real_http_server(live_server, alice, civic):
    bulk_messages(civic, 2500)
    with requests.get(
        live_server.url + URL,
        params={**YEAR_2021, "fields": "recipient_address,receive_date"},
        headers=alice.headers,
        stream=True,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/json"
        assert "Content-Length" not in response.headers  # written as it comes
        pieces = list(response.iter_content(chunk_size=None))
    page = json.loads(b"".join(pieces))
    assert (page["total_results"], len(page["results"])) == (2500, 2500)
    assert page["results"][-1] == {
        "recipient_address": "r2499@customer.com",
        "receive_date": "2021-06-01 00:41:39",
    }
    response = requests.get(live_server.url + URL, params={"page": "0"}, headers=alice.headers)
    assert (response.status_code, response.json()) == (
        400,
        {"errors": ["page must be a whole number from 1 to 1000000000"]},
    )


def test_closing_a_half_read_page_releases_its_cursor(alice, civic):
    """What the view's streamed body does when the client goes away mid-page."""
    bulk_messages(civic, 2500)
    savepoints = list(connection.savepoint_ids)
    total, rows = search_results(account=alice.account, query=search_parse(YEAR_2021))
    assert total == 2500
    assert next(rows) == {
        "message_id": ANY,
        "receive_date": "2021-06-01 00:00:00",
        "node_id": "abc123",
        "node_name": "Bobs automotive",
        "node_type": "Dealer",
        "link_id": "xyz789",
        "link_name": "Honda Civic",
        "link_type": "Vehicle",
        "sender_address": "bob@bob.com",
        "recipient_address": "r0@customer.com",
        "disposition": "received",
        "read_disposition": "unread",
    }
    # On PostgreSQL the cursor is read inside a transaction (a savepoint within the test's).
    in_transaction = connection.vendor == "postgresql"
    assert len(connection.savepoint_ids) == len(savepoints) + in_transaction
    rows.close()
    assert connection.savepoint_ids == savepoints
    # Closed before a row is read, as after a HEAD request.
    total, rows = search_results(account=alice.account, query=search_parse(YEAR_2021))
    rows.close()
    assert connection.savepoint_ids == savepoints
    assert search(alice, **YEAR_2021, limit=1)["total_results"] == 2500


def test_the_api_and_the_python_rows_agree_on_every_kind_of_value(alice, civic):
    spec_message(civic, sender_name='Bob "the builder" Bób', recipient_name="Zoë\\\n\t")
    spec_message(civic, delivery_date=None, proxy_address="", proxy_name="", sender_name="")
    spec_message(
        civic,
        conversation_id=uuid.uuid4(),
        read_disposition="read",
        read_first_date=at("2021-07-01 00:00:00"),
        disposition="received_bounced",
    )
    for fields in ("", "proxy_name,message_id,read_first_date"):
        params = {**YEAR_2021, "fields": fields}
        api = search(alice, **params)
        assert api == search_page(account=alice.account, query=search_parse(params))
        assert len(api["results"]) == 3
    # Undelivered first (delivery_date DESC), then by arrival.
    assert api["results"][0] == {"message_id": ANY}
    assert api["results"][1] == {"proxy_name": "Company Name", "message_id": ANY}
    assert api["results"][2]["read_first_date"] == "2021-07-01 00:00:00"


def test_the_portal_gets_the_same_page_and_queryset(alice, civic):
    for day in range(1, 4):
        spec_message(civic, receive_date=at(f"2021-06-0{day} 10:00:00"))
    query = search_parse({**YEAR_2021, "limit": "2", "page": "2"})
    assert search_page(account=alice.account, query=query) == search(
        alice, **YEAR_2021, limit=2, page=2
    )
    assert search_queryset(account=alice.account, query=query).count() == 3
