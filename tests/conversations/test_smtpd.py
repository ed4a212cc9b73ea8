"""The inbound SMTP server, spoken to with smtplib: who may receive, what is stored."""

from __future__ import annotations

import asyncio
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conversations.models import Conversation, InboundMessage, ProxyDomain
from tests.conversations.conftest import eml
from tests.factories import ContactFactory, LinkFactory, NodeFactory
from tracking.models import Message

ALIAS = "bobs-automotive_honda-civic@iovox.email"
PROXY = "hn7m890cfqt234@example.com"


@pytest.fixture
def addresses(transactional_db):
    link = LinkFactory(
        node=NodeFactory(node_name="Bobs automotive"),
        email_address=ALIAS,
        destination=None,
    )
    Conversation.objects.create(
        account=link.account,
        link=link,
        proxy_domain=ProxyDomain.objects.create(domain="example.com"),
        proxy_address=PROXY,
        party_a_address="bob.bob@iovox.com",
        party_b_address="bob@customer.com",
    )
    ContactFactory(account=link.account)
    return link


def test_unknown_recipient_is_refused_at_rcpt_with_550_5_1_1(inbound_server, addresses):
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("someone@example.net")
        code, text = smtp.rcpt("nobody@iovox.email")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, _ = smtp.rcpt("nobody@elsewhere.example")
        assert code == 550
    assert not InboundMessage.objects.exists()


def test_each_recipient_is_judged_on_its_own_and_case_does_not_matter(inbound_server, addresses):
    raw = eml("non_ascii_headers.eml", sender="someone@example.net", to=ALIAS)
    refused = inbound_server.send(
        raw,
        mail_from="someone@example.net",
        to=[ALIAS.upper(), "nobody@iovox.email", "HN7M890CFQT234@Example.COM"],
    )
    assert set(refused) == {"nobody@iovox.email"}
    assert refused["nobody@iovox.email"][0] == 550
    inbound = InboundMessage.objects.get()
    assert inbound.rcpt_to == [ALIAS, PROXY]
    assert inbound.mail_from == "someone@example.net"
    assert inbound.peer == "127.0.0.1"
    assert inbound.status == InboundMessage.Status.PENDING


def test_message_is_stored_whole_with_our_received_line_on_top(inbound_server, addresses):
    raw = eml("nested_multipart.eml", sender="carla@carla.example", to=ALIAS)
    inbound_server.send(raw, mail_from="carla@carla.example", to=ALIAS)
    stored = bytes(InboundMessage.objects.get().raw)
    assert stored.startswith(b"Received: from ")
    assert b"(iovox inbound) with ESMTP id" in stored.split(b"\r\n\r\n")[0]
    assert stored.endswith(raw)


def test_all_recipients_refused_means_no_message_is_stored(inbound_server, addresses):
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        inbound_server.send(b"Subject: x\r\n\r\nx\r\n", mail_from="a@b.example", to="x@y.example")
    assert not InboundMessage.objects.exists()


def test_message_over_the_size_limit_is_refused_with_552(inbound_server, addresses, settings):
    settings.MAX_MESSAGE_SIZE = 2000
    line = b"x" * 78 + b"\r\n"
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("a@b.example")  # no SIZE declared: the limit applies to the data itself
        smtp.rcpt(ALIAS)
        code, _ = smtp.data(b"Subject: big\r\n\r\n" + line * 40)
    assert code == 552
    assert not InboundMessage.objects.exists()


def test_declared_size_over_the_limit_is_refused_at_mail_from(inbound_server, addresses, settings):
    settings.MAX_MESSAGE_SIZE = 2000
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        code, _ = smtp.mail("a@b.example", ["SIZE=5000"])
    assert code == 552


def test_malformed_mime_is_stored_and_accepted(inbound_server, addresses):
    raw = eml("malformed.eml", to=ALIAS)
    inbound_server.send(raw, mail_from="", to=ALIAS)
    inbound = InboundMessage.objects.get()
    assert bytes(inbound.raw).endswith(raw)
    assert inbound.status == InboundMessage.Status.PENDING
    assert inbound.mail_from == ""  # the null reverse-path, MAIL FROM:<>


def test_message_carrying_our_loop_header_is_refused_and_recorded(inbound_server, addresses):
    raw = b"X-Iovox-Loop: " + ALIAS.encode() + b"\r\n" + eml("auto_reply.eml", to=ALIAS)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        inbound_server.send(raw, mail_from="a@b.example", to=ALIAS)
    assert refused.value.smtp_code == 554
    assert b"5.4.6" in refused.value.smtp_error
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "X-Iovox-Loop" in inbound.error


def test_message_with_too_many_received_headers_is_refused_as_a_loop(inbound_server, addresses):
    hops = b"".join(
        b"Received: from hop%d.example by hop%d.example; Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        % (n, n + 1)
        for n in range(25)
    )
    raw = hops + eml("non_ascii_headers.eml", sender="a@b.example", to=ALIAS)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        inbound_server.send(raw, mail_from="a@b.example", to=ALIAS)
    assert refused.value.smtp_code == 554
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "26 Received headers" in inbound.error


def test_24_received_headers_are_still_accepted(inbound_server, addresses):
    hops = b"Received: from a by b; Mon, 23 Nov 2026 10:00:00 +0000\r\n" * 24
    inbound_server.send(hops + b"Subject: ok\r\n\r\nok\r\n", mail_from="a@b.example", to=ALIAS)
    assert InboundMessage.objects.get().status == InboundMessage.Status.PENDING


def test_failure_to_store_is_a_451_so_the_sender_retries(inbound_server, addresses, monkeypatch):
    def broken(arrival):
        raise RuntimeError("database is down")

    monkeypatch.setattr("conversations.inbound.receive._inbound_row", broken)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        inbound_server.send(b"Subject: x\r\n\r\nx\r\n", mail_from="a@b.example", to=ALIAS)
    assert refused.value.smtp_code == 451


def test_concurrent_connections_are_all_served(inbound_server, addresses):
    def deliver(n: int) -> dict:
        raw = b"Subject: message %d\r\nMessage-ID: <c%d@example.net>\r\n\r\nhello\r\n" % (n, n)
        return inbound_server.send(raw, mail_from=f"s{n}@example.net", to=ALIAS)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(deliver, range(24)))
    assert results == [{}] * 24
    assert InboundMessage.objects.count() == 24


def test_recipients_beyond_one_hundred_get_a_452(inbound_server, transactional_db, monkeypatch):
    monkeypatch.setattr("conversations.inbound.smtp.MAX_RECIPIENTS", 2)
    link = LinkFactory(email_address="a1@iovox.email")
    LinkFactory(node=link.node, email_address="a2@iovox.email")
    LinkFactory(node=link.node, email_address="a3@iovox.email")
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("a@b.example")
        codes = [smtp.rcpt(f"a{n}@iovox.email")[0] for n in (1, 1, 2, 3)]
    assert codes == [250, 250, 250, 452]  # a repeated recipient counts once


# --- Group commit: concurrent sessions stored in one transaction ----------------------------


@pytest.fixture
def groups(monkeypatch):
    """The size of each group the server stores (the real store, watched); the first group
    is held back a moment so that the next sessions queue up behind it. Asked for before
    inbound_server, whose handler takes its store when it starts."""
    from conversations.inbound.smtp import InboundHandler

    sizes: list[int] = []
    store = InboundHandler.store_group

    async def watched(handler, arrivals):
        sizes.append(len(arrivals))
        if len(sizes) == 1:
            await asyncio.sleep(0.3)
        return await store(handler, arrivals)

    monkeypatch.setattr(InboundHandler, "store_group", watched)
    return sizes


def send_concurrently(inbound_server, count: int, body: bytes = b"hello\r\n") -> list:
    def send(n: int):
        raw = b"Subject: message %d\r\nMessage-ID: <g%d@example.net>\r\n\r\n" % (n, n) + body
        try:
            with inbound_server.client() as smtp:
                smtp.ehlo("client.example")
                if n:  # the others start while the first one's group is being written
                    time.sleep(0.1)
                return smtp.sendmail(f"s{n}@example.net", [ALIAS], raw)
        except smtplib.SMTPDataError as refused:
            return refused.smtp_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(send, range(count)))


def test_concurrent_sessions_share_one_transaction_and_each_gets_its_250(
    groups, inbound_server, addresses
):
    assert send_concurrently(inbound_server, 4) == [{}] * 4
    assert groups == [1, 3]
    assert InboundMessage.objects.count() == 4


def test_large_messages_are_stored_in_groups_of_their_own(groups, inbound_server, addresses):
    line = b"x" * 998 + b"\r\n"
    assert send_concurrently(inbound_server, 4, body=line * 600) == [{}] * 4  # 600 KB each
    assert groups == [1, 1, 1, 1]  # two would be over GROUP_COMMIT_BYTES (1 MB)


def test_a_failed_group_gives_each_of_its_messages_a_451(
    groups, inbound_server, addresses, monkeypatch
):
    from conversations.inbound import receive

    row = receive._inbound_row

    def second_group_fails(arrival):
        if len(groups) > 1:  # the first group has gone through
            raise RuntimeError("database is down")
        return row(arrival)

    monkeypatch.setattr(receive, "_inbound_row", second_group_fails)
    assert send_concurrently(inbound_server, 4) == [{}, 451, 451, 451]
    assert groups == [1, 3]
    assert InboundMessage.objects.count() == 1


# --- Recipients known to be ours are remembered a short while, unknown ones never -----------


def test_an_alias_made_just_after_a_550_is_accepted_at_once(inbound_server, addresses):
    new = "brand-new_alias@iovox.email"
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("a@b.example")
        assert smtp.rcpt(new)[0] == 550
        LinkFactory(node=addresses.node, email_address=new)
        assert smtp.rcpt(new)[0] == 250


def test_a_removed_alias_still_believed_ours_is_refused_when_routed(inbound_server, addresses):
    from conversations.inbound.routing import inbound_route_pending

    inbound_server.send(b"Subject: one\r\n\r\nhi\r\n", mail_from="a@b.example", to=ALIAS)
    # Support staff remove it in the admin (no service clears an alias).
    addresses.email_address = None
    addresses.save(update_fields=["email_address"])
    inbound_server.send(b"Subject: two\r\n\r\nhi\r\n", mail_from="a@b.example", to=ALIAS)
    assert inbound_route_pending() == 2
    for inbound in InboundMessage.objects.all():  # both: routing asks the database again
        assert inbound.status == InboundMessage.Status.REFUSED
        assert "no longer an alias" in inbound.error
    assert not Message.objects.exists()


# --- Database connections: checked at most once a second, replaced when broken -------------


@pytest.fixture
def persistent_connections(inbound_server):
    """The server's threads keep their connections (CONN_MAX_AGE), as deployed; closed by
    the database at the end, so none outlives the test."""
    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("terminating the server's connections takes PostgreSQL")
    connections.settings["default"]["CONN_MAX_AGE"] = 60
    yield
    connections.settings["default"]["CONN_MAX_AGE"] = 0
    _terminate_other_connections(connection)


def _terminate_other_connections(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_a_connection_broken_since_its_last_use_is_replaced_without_a_451(
    inbound_server, addresses, persistent_connections, caplog
):
    from django.db import connection

    inbound_server.send(b"Subject: one\r\n\r\nhi\r\n", mail_from="a@b.example", to=ALIAS)
    assert _terminate_other_connections(connection) >= 1  # as a database restart would
    # Within a second of its last use a connection is not checked: the first job of a thread
    # whose connection broke fails, and is run again on a new connection.
    two = b"Subject: two\r\n\r\nhi\r\n"
    assert inbound_server.send(two, mail_from="bob@customer.com", to=PROXY) == {}
    assert "trying on a new one" in caplog.text
    assert InboundMessage.objects.count() == 2
