from __future__ import annotations

from datetime import UTC, date, datetime

from tests.factories import LinkFactory, MessageFactory
from tracking.models import Disposition, Message
from tracking.reports import message_kpis, messages_per_day, messages_per_link, with_links


def test_kpis_count_dispositions_and_reads_of_delivered_mail(alice, django_assert_num_queries):
    link = LinkFactory(node__account=alice.account)
    MessageFactory(link=link, disposition=Disposition.SENT, read_disposition="read")
    MessageFactory(link=link, disposition=Disposition.SENT)
    MessageFactory(link=link, disposition=Disposition.RECEIVED_BOUNCED)
    MessageFactory(link=link, disposition=Disposition.EXPIRED)
    MessageFactory(link=link, disposition=Disposition.RECEIVED)

    with django_assert_num_queries(1):
        kpis = message_kpis(Message.objects.for_account(alice.account))

    assert (kpis.emails, kpis.sent, kpis.bounced, kpis.failed, kpis.pending) == (5, 2, 1, 1, 1)
    assert kpis.read_rate == 1 / 3 and kpis.bounce_rate == 1 / 3


def test_kpis_of_nothing_have_no_rates(alice):
    kpis = message_kpis(Message.objects.for_account(alice.account))

    assert kpis.emails == 0 and kpis.read_rate is None and kpis.bounce_rate is None


def test_messages_per_day_fills_every_utc_day_of_the_range(alice):
    link = LinkFactory(node__account=alice.account)
    MessageFactory(link=link, receive_date=datetime(2026, 3, 2, 23, 59, tzinfo=UTC))
    MessageFactory(link=link, receive_date=datetime(2026, 3, 2, 0, 0, tzinfo=UTC))
    MessageFactory(
        link=link,
        receive_date=datetime(2026, 3, 4, 8, 0, tzinfo=UTC),
        disposition=Disposition.QUEUED,
    )

    days = messages_per_day(
        Message.objects.for_account(alice.account), first=date(2026, 3, 1), last=date(2026, 3, 4)
    )

    assert [(d.day.day, d.counts) for d in days] == [
        (1, {}),
        (2, {"received": 2}),
        (3, {}),
        (4, {"queued": 1}),
    ]


def test_messages_per_link_puts_the_busiest_link_first(alice):
    quiet, busy = LinkFactory(node__account=alice.account), LinkFactory(node__account=alice.account)
    MessageFactory(link=quiet)
    MessageFactory.create_batch(3, link=busy, disposition=Disposition.SENT)

    rows = with_links(list(messages_per_link(Message.objects.for_account(alice.account))))

    assert [(r["link"].link_id, r["emails"], r["sent"]) for r in rows] == [
        (busy.link_id, 3, 3),
        (quiet.link_id, 1, 0),
    ]
