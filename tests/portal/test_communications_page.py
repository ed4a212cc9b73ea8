from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.factories import LinkFactory, MessageFactory, NodeFactory
from tracking.models import Disposition, Message, ReadDisposition

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def links(alice):
    dealer = NodeFactory(account=alice.account, node_id="dealer", node_name="Bobs automotive")
    agency = NodeFactory(account=alice.account, node_id="agency", node_name="Harbour Lettings")
    return {
        "civic": LinkFactory(node=dealer, link_id="civic", link_name="Honda Civic"),
        "flat": LinkFactory(node=agency, link_id="flat", link_name="Flat 12"),
    }


def message(link, days_ago: float, disposition=Disposition.SENT, read=False, **fields):
    received = NOW - timedelta(days=days_ago)
    delivered = disposition in (Disposition.SENT, Disposition.RECEIVED_BOUNCED)
    return MessageFactory(
        link=link,
        receive_date=received,
        disposition=disposition,
        delivery_date=received + timedelta(seconds=30) if delivered else None,
        read_disposition=ReadDisposition.READ if read else ReadDisposition.UNREAD,
        read_first_date=received + timedelta(hours=1) if read else None,
        **fields,
    )


@pytest.fixture
def traffic(links, bob):
    civic, flat = links["civic"], links["flat"]
    made = [
        message(civic, 1, read=True, subject="Your test drive"),
        message(civic, 2),
        message(civic, 3, Disposition.RECEIVED_BOUNCED),
        message(flat, 4, Disposition.UNDELIVERABLE),
        message(flat, 5, Disposition.QUEUED),
        message(flat, 6, Disposition.NO_MX_RECORD),
        message(civic, 45),  # outside the default 30 days
    ]
    bobs_link = LinkFactory(node__account=bob.account, link_id="civic")
    for days in range(4):
        message(bobs_link, days)
    return made


def test_kpis_count_the_accounts_emails_in_the_default_range(alice_portal, traffic):
    response = alice_portal.get("/communications/")

    kpis = response.context["kpis"]
    assert response.status_code == 200
    assert (kpis.emails, kpis.sent, kpis.bounced, kpis.failed, kpis.pending) == (6, 2, 1, 2, 1)
    assert kpis.read == 1 and kpis.read_rate == pytest.approx(1 / 3)
    page = response.content.decode()
    assert '<span class="kpi-label">Emails</span><span class="kpi-value">6</span>' in page
    assert "33.3%" in page


def test_the_range_shown_is_the_thirty_days_up_to_today(alice_portal, traffic):
    page = alice_portal.get("/communications/").content.decode()

    assert 'name="start" value="2026-02-14"' in page
    assert 'name="end" value="2026-03-15"' in page
    assert "14 Feb 2026 – 15 Mar 2026" in page


def test_an_explicit_range_includes_older_mail(alice_portal, traffic):
    response = alice_portal.get("/communications/?start=2026-01-01&end=2026-03-15")

    assert response.context["kpis"].emails == 7


@pytest.mark.parametrize(
    ("query", "emails"),
    [
        ("node=dealer", 3),
        ("link=flat", 3),
        ("status=sent", 2),
        ("status=noMxRecord", 1),
        ("read=read", 1),
        ("read=unread", 5),
        ("node=dealer&status=received_bounced", 1),
    ],
)
def test_filters_narrow_the_kpis_and_the_table(alice_portal, traffic, query, emails):
    response = alice_portal.get(f"/communications/?view=emails&{query}")

    assert response.context["kpis"].emails == emails
    assert response.content.decode().count('<a class="when" href="/messages/') == emails


def test_the_emails_kpi_box_switches_the_table_to_the_email_columns(alice_portal, traffic):
    summary = alice_portal.get("/communications/?node=dealer").content.decode()
    assert 'href="?node=dealer&amp;view=emails" data-kpi="emails"' in summary

    page = alice_portal.get("/communications/?node=dealer&view=emails").content.decode()

    for heading in ("Received", "Node", "Link", "From", "To", "Subject", "Status", "Read",
                    "First read", "Delivered", "Conversation"):  # fmt: skip
        assert f">{heading}" in page
    assert "Your test drive" in page and "Bounced" in page


def test_statuses_use_the_guides_wording(alice_portal, traffic):
    page = alice_portal.get("/communications/?view=emails").content.decode()

    for wording in ("Sent", "Bounced", "Undeliverable", "Queued", "No Mx Record"):
        assert f">{wording}</span>" in page
    assert ">Read</span>" in page and ">Unread</span>" in page


def test_the_links_table_sums_up_each_link(alice_portal, traffic):
    response = alice_portal.get("/communications/")

    rows = {row["link"].link_id: row for row in response.context["page"]}
    assert rows["civic"]["emails"] == 3 and rows["civic"]["bounced"] == 1
    assert rows["flat"]["failed"] == 2


def test_sorting_by_a_column_orders_the_emails(alice_portal, traffic):
    oldest_first = alice_portal.get("/communications/?view=emails&order=receive_date_ASC")
    newest_first = alice_portal.get("/communications/?view=emails")

    dates = [m.receive_date for m in oldest_first.context["page"]]
    assert dates == sorted(dates)
    assert [m.receive_date for m in newest_first.context["page"]] == sorted(dates, reverse=True)
    # The sorted column's heading now offers the other direction.
    assert "order=receive_date_DESC" in oldest_first.content.decode()


def test_an_unknown_sort_is_a_400_with_the_search_apis_message(alice_portal, traffic):
    response = alice_portal.get("/communications/?view=emails&order=bogus_ASC")

    assert response.status_code == 400
    assert "flash-error" in response.content.decode()
    assert response.context["errors"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("start=2026-03-10&end=2026-03-01", "The start date must be on or before the end date."),
        ("start=yesterday", "Enter a valid date."),
        ("status=delivered", "Select a valid choice."),
        ("node=not-mine", "Select a valid choice."),
        ("start=2020-01-01&end=2026-01-01", "Choose a range of at most 366 days."),
    ],
)
def test_bad_filters_are_a_400_with_a_message(alice_portal, traffic, query, message):
    response = alice_portal.get(f"/communications/?{query}")

    assert response.status_code == 400
    assert message in response.content.decode()


def test_the_emails_table_is_paginated(alice_portal, links):
    for n in range(60):
        message(links["civic"], n / 10)

    first = alice_portal.get("/communications/?view=emails")
    second = alice_portal.get("/communications/?view=emails&page=2")

    assert len(first.context["page"]) == 50 and len(second.context["page"]) == 10
    assert "1–50 of 60" in first.content.decode()
    assert 'href="?view=emails&amp;page=2"' in first.content.decode()


def test_the_chart_has_a_bar_per_day_stacked_by_status(alice_portal, traffic):
    response = alice_portal.get("/communications/?start=2026-03-08&end=2026-03-15")

    chart = response.context["chart"]
    assert len(chart.bars) == 8
    by_day = {bar.day_label: bar for bar in chart.bars}
    assert by_day["Sat 14 Mar 2026"].total == 1
    assert [s.disposition for s in by_day["Thu 12 Mar 2026"].segments] == ["received_bounced"]
    page = response.content.decode()
    assert '<svg class="chart"' in page and "Sat 14 Mar 2026: 1 email" in page


def test_bobs_mail_never_shows_in_alices_page(alice_portal, bob, traffic):
    page = alice_portal.get("/communications/?view=emails&link=civic").content.decode()

    assert page.count('<a class="when" href="/messages/') == 3


def test_a_conversation_link_shows_the_whole_thread(alice_portal, links):
    conversation = uuid.uuid4()
    message(links["civic"], 1, conversation_id=conversation)
    message(links["civic"], 2, conversation_id=conversation)
    message(links["civic"], 3)

    response = alice_portal.get(f"/communications/?view=emails&conversation={conversation}")

    assert response.context["kpis"].emails == 2
    assert "Showing one conversation" in response.content.decode()


def test_the_emails_view_costs_a_fixed_number_of_queries(
    alice_portal, links, django_assert_max_num_queries
):
    for n in range(60):
        message(links["civic" if n % 2 else "flat"], n / 3, read=n % 3 == 0)

    with django_assert_max_num_queries(10):
        response = alice_portal.get("/communications/?view=emails")

    assert response.status_code == 200


def test_the_links_view_costs_a_fixed_number_of_queries(
    alice_portal, links, django_assert_max_num_queries
):
    for n in range(40):
        message(LinkFactory(node=links["civic"].node), n / 3)

    with django_assert_max_num_queries(10):
        response = alice_portal.get("/communications/")

    assert len(response.context["page"]) == 40


def read_csv(response) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_csv_export_streams_the_filtered_set_with_the_search_fields(alice_portal, traffic):
    response = alice_portal.get("/communications/export.csv?node=dealer")

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="emails-20260214-20260315.csv"' in response["Content-Disposition"]
    rows = read_csv(response)
    assert len(rows) == 3
    assert {row["node_id"] for row in rows} == {"dealer"}
    assert list(rows[0])[:3] == ["message_id", "receive_date", "delivery_date"]
    first = next(r for r in rows if r["message_id"] == str(traffic[0].message_id))
    assert first["receive_date"] == "2026-03-14 12:00:00"
    assert first["read_disposition"] == "read" and first["disposition"] == "sent"


def test_csv_export_holds_only_the_accounts_mail(alice_portal, bob_portal, traffic):
    alice_ids = {r["message_id"] for r in read_csv(alice_portal.get("/communications/export.csv"))}
    bob_ids = {r["message_id"] for r in read_csv(bob_portal.get("/communications/export.csv"))}

    assert len(alice_ids) == 6 and len(bob_ids) == 4
    assert not alice_ids & bob_ids


def test_csv_export_of_bad_filters_is_a_400(alice_portal, traffic):
    response = alice_portal.get("/communications/export.csv?start=2026-03-10&end=2026-03-01")

    assert response.status_code == 400


def test_quick_ranges_keep_the_other_filters_and_mark_the_range_in_force(alice_portal, traffic):
    page = alice_portal.get("/communications/?node=dealer&view=emails").content.decode()

    assert (
        'class="preset" href="?node=dealer&amp;start=2026-03-09&amp;end=2026-03-15'
        '&amp;view=emails">Last 7 days' in page
    )
    assert 'class="preset active" href="?node=dealer&amp;start=2026-02-14' in page
    assert "start=2026-02-01&amp;end=2026-02-28" in page  # last month


def test_the_csv_holds_exactly_what_the_search_api_answers_for_the_same_filters(
    alice, alice_portal, traffic
):
    exported = read_csv(
        alice_portal.get("/communications/export.csv?node=dealer&order=receive_date_ASC")
    )
    response = alice.client.get(
        "/rest/v1/email/search",
        {
            "start_date": "2026-02-14 00:00:00",
            "end_date": "2026-03-15 23:59:59",
            "node_id": "dealer",
            "order": "receive_date_ASC",
        },
    )
    answered = json.loads(b"".join(response.streaming_content))["results"]

    assert [{k: v for k, v in row.items() if v} for row in exported] == answered
    assert len(answered) == 3


def test_csv_cells_that_a_spreadsheet_would_run_as_formulas_are_neutralised(alice_portal, links):
    message(links["civic"], 1, sender_name='=HYPERLINK("http://evil.example")')

    rows = read_csv(alice_portal.get("/communications/export.csv"))

    assert rows[0]["sender_name"] == '\'=HYPERLINK("http://evil.example")'


def test_csv_export_of_a_large_set_is_one_streamed_query(
    alice_portal, links, django_assert_max_num_queries
):
    Message.objects.bulk_create(
        MessageFactory.build(link=links["civic"], receive_date=NOW - timedelta(minutes=n))
        for n in range(2500)
    )  # more than one page of the cursor the search reads large pages through

    with django_assert_max_num_queries(12):
        rows = read_csv(alice_portal.get("/communications/export.csv?start=2026-01-01"))

    assert len(rows) == 2500
    assert len({row["message_id"] for row in rows}) == 2500


def test_the_sent_bounced_and_read_boxes_filter_the_email_table(alice_portal, traffic):
    page = alice_portal.get("/communications/?node=dealer&status=queued").content.decode()

    assert 'href="?node=dealer&amp;status=sent&amp;view=emails" data-kpi="sent"' in page
    assert 'href="?node=dealer&amp;status=received_bounced&amp;view=emails"' in page
    assert 'href="?node=dealer&amp;status=queued&amp;read=read&amp;view=emails"' in page
