"""Inbound mail end to end: smtplib to our server, the worker's routing and delivery (its
loops' turns after each message, tests/worker.py) through the local DNS server to the aiosmtpd
sink standing in for the recipient's MX."""

from __future__ import annotations

import email
import email.policy

import pytest

from conversations.inbound.routing import inbound_route
from conversations.models import Conversation, InboundMessage
from tests.conversations.conftest import ALIAS, CUSTOMER, PARTY_A, PARTY_B, WorkedServer, eml
from tracking.delivery.verp import verp_address
from tracking.models import Direction, Disposition, Message


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


@pytest.fixture
def live(inbound_server, mail_servers):
    """Our server, the worker's turns (tests/worker.py), and the MX sink for example.net and
    party A."""
    mail_servers.dns.route("dealer.example.net")
    return WorkedServer(inbound_server.host, inbound_server.port)


# --- Alias forwarding -----------------------------------------------------------------------


def test_alias_mail_is_forwarded_to_the_destination_contact_aligned(live, link, mail_servers):
    """From the writer's reverse address (DMARC judges our domain), the writer shown in the
    display name and kept in X-Original-From; the rest as it came."""
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    live.send(raw, mail_from=CUSTOMER, to=ALIAS)

    message = Message.objects.get()
    assert message.direction == Direction.ALIAS
    assert message.link == link
    assert (message.sender_address, message.sender_name) == (CUSTOMER, "Bob Bob")
    assert (message.recipient_address, message.recipient_name) == (
        "sales@example.net",
        "Sales desk",
    )
    assert message.subject == "Re: Your test drive"
    conversation = Conversation.objects.get(kind=Conversation.Kind.ALIAS)
    assert (conversation.link, conversation.party_a_address) == (link, CUSTOMER)
    assert conversation.party_b_address == "sales@example.net"
    assert conversation.proxy_address.endswith("@iovox.email")
    assert message.conversation_id == conversation.conversation_id
    assert message.proxy_address == conversation.proxy_address
    assert message.smtp_message_id.endswith("@iovox.email>")  # ours, mapped to the writer's
    assert message.text_content.startswith("Great, see you Thursday")
    assert message.disposition == Disposition.SENT
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.ROUTED
    assert list(inbound.messages.all()) == [message]

    [received] = mail_servers.mx.received
    assert received.rcpt_tos == ["sales@example.net"]
    assert received.mail_from == verp_address(message)
    forwarded = parse(received.data)
    [shown] = forwarded["From"].addresses
    assert (shown.display_name, shown.addr_spec) == (
        f"Bob Bob ({CUSTOMER})",
        conversation.proxy_address,
    )
    assert forwarded["X-Original-From"] == f"Bob Bob <{CUSTOMER}>"
    assert forwarded["To"] == f"Company Name <{ALIAS}>"
    assert forwarded["X-Iovox-Loop"] == ALIAS
    assert forwarded["Return-Path"] is None
    # Tracking changed the HTML body, so the sender's signature, which could only fail now, is gone.
    assert forwarded["DKIM-Signature"] is None
    assert forwarded["In-Reply-To"] == "<0f3c9a1e5b7d4c2a@iovox.email>"
    original = parse(raw)
    sent_text = forwarded.get_body(("plain",)).get_content()
    assert sent_text == original.get_body(("plain",)).get_content()
    sent_html = forwarded.get_body(("html",)).get_content()
    assert sent_html.startswith(original.get_body(("html",)).get_content().rstrip())
    assert "/t/o/" in sent_html  # the pixel, after the sender's HTML


def test_forwarded_mail_is_tracked_when_routed_and_sent_as_stored(live, link, mail_servers):
    """One parse at routing serves the stored content and the tracking: the pixel and click
    URLs name this Message, the content for search stays the sender's, and delivery sends the
    stored bytes as they are."""
    from tracking.engagement.tokens import open_token_message_id

    live.send(eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from=CUSTOMER, to=ALIAS)
    message = Message.objects.get()
    assert message.source_tracked
    assert "/t/o/" not in message.html_content  # what search and the portal show
    [received] = mail_servers.mx.received
    assert received.data.endswith(bytes(message.source_mime))  # our trace line on top only
    html = parse(received.data).get_body(("html",)).get_content()
    token = html.split("/t/o/", 1)[1].split(".gif", 1)[0]
    assert open_token_message_id(token) == message.message_id


def test_mail_that_is_not_sent_is_not_tracked(live, link, mail_servers):
    link.destination = None
    link.save()
    live.send(eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from=CUSTOMER, to=ALIAS)
    message = Message.objects.get()
    assert message.disposition == Disposition.NO_RULES
    assert not message.source_tracked and b"/t/o/" not in bytes(message.source_mime)


def test_nested_multipart_with_attachments_is_forwarded_intact(live, link, mail_servers):
    raw = eml("nested_multipart.eml", sender="carla@carla.example", to=ALIAS)
    live.send(raw, mail_from="carla@carla.example", to=ALIAS)
    forwarded = parse(mail_servers.mx.received[0].data)
    parts = [part.get_content_type() for part in forwarded.walk()]
    assert parts == [
        "multipart/mixed",
        "multipart/related",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "image/png",
        "application/pdf",
    ]
    assert [a.get_filename() for a in forwarded.iter_attachments()] == ["brochure.pdf"]
    message = Message.objects.get()
    assert "cid:photo1@carla.example" in message.html_content


def test_alias_without_destination_is_no_rules_and_nothing_is_sent(live, link, mail_servers):
    link.destination = None
    link.save(update_fields=["destination"])
    live.send(eml("non_ascii_headers.eml", sender=CUSTOMER, to=ALIAS), mail_from=CUSTOMER, to=ALIAS)
    message = Message.objects.get()
    assert message.disposition == Disposition.NO_RULES
    assert message.status_detail == "the link has no destination contact"
    assert message.subject == "Prüfung der Angebote — 日本"
    assert mail_servers.mx.received == []


@pytest.mark.parametrize(
    "email_address, detail",
    [
        ("", "has no email"),
        ("someone_else@iovox.email", "one of our own addresses"),
    ],
)
def test_alias_with_an_unusable_destination_is_a_rule_error(
    live, link, mail_servers, email_address, detail
):
    link.destination.email = email_address
    link.destination.save(update_fields=["email"])
    live.send(eml("auto_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from=CUSTOMER, to=ALIAS)
    message = Message.objects.get()
    assert message.disposition == Disposition.RULE_ERROR
    assert detail in message.status_detail
    assert mail_servers.mx.received == []


def test_auto_replies_to_an_alias_are_forwarded_with_their_marks(live, link, mail_servers):
    live.send(eml("auto_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from="", to=ALIAS)
    forwarded = parse(mail_servers.mx.received[0].data)
    assert forwarded["Auto-Submitted"] == "auto-replied"
    assert forwarded["X-Iovox-Loop"] == ALIAS


def test_malformed_mail_is_forwarded_best_effort_with_its_problems_recorded(
    live, link, mail_servers
):
    live.send(eml("malformed.eml", to=ALIAS), mail_from="odd@sender.example", to=ALIAS)
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.ROUTED
    assert "from header has no address" in inbound.error
    message = Message.objects.get()
    assert message.sender_address == "odd@sender.example"  # the envelope, for want of a From
    assert len(mail_servers.mx.received) == 1


# --- Proxy conversations --------------------------------------------------------------------


def test_reply_from_party_b_is_relayed_to_party_a_from_the_proxy_address(
    live, conversation, mail_servers
):
    proxy = conversation.proxy_address
    raw = eml("gmail_reply.eml", sender=PARTY_B, to=proxy)
    live.send(raw, mail_from=PARTY_B, to=proxy.upper())

    message = Message.objects.get()
    assert message.direction == Direction.RELAY
    assert message.conversation_id == conversation.conversation_id
    assert (message.proxy_address, message.proxy_name) == (proxy, "Billy Bob")
    assert (message.sender_address, message.sender_name) == (PARTY_B, "Billy Bob")
    assert (message.recipient_address, message.recipient_name) == (PARTY_A, "Dealer Dan")
    assert message.disposition == Disposition.SENT

    [received] = mail_servers.mx.received
    assert received.rcpt_tos == [PARTY_A]
    assert received.mail_from == verp_address(message)
    relayed = parse(received.data)
    assert relayed["From"] == f"Billy Bob <{proxy}>"
    assert relayed["To"] == f"Dealer Dan <{PARTY_A}>"
    assert relayed["Cc"] is None and relayed["DKIM-Signature"] is None
    # A Message-ID of ours; the conversation's first message (ours) is named as it was, an
    # id the other party never saw (on the writer's side) is left out.
    assert relayed["Message-ID"].endswith("@proxy.example>")
    assert message.smtp_message_id == relayed["Message-ID"]
    assert relayed["In-Reply-To"] == "<0f3c9a1e5b7d4c2a@iovox.email>"
    assert relayed["References"] == "<0f3c9a1e5b7d4c2a@iovox.email>"
    header_block = received.data.split(b"\r\n\r\n")[0].decode()
    assert PARTY_B not in header_block and "gmail" not in header_block


def test_mail_from_party_a_goes_to_party_b_under_the_proxy_name(live, conversation, mail_servers):
    proxy = conversation.proxy_address
    raw = eml("outlook_reply.eml", sender=PARTY_A.upper(), to=proxy)
    live.send(raw, mail_from="bounces@dealer.example.net", to=proxy)
    [received] = mail_servers.mx.received
    relayed = parse(received.data)
    assert received.rcpt_tos == [PARTY_B]
    assert relayed["From"] == f"Bobs automotive <{proxy}>"
    assert relayed["To"] == f"Billy Bob <{PARTY_B}>"
    assert relayed["Reply-To"] is None  # it named party A's private address
    assert relayed["Thread-Index"] == "AQHaHbN1mC2b3Qk7Tk6pV8mDbq0qWQ=="
    assert Message.objects.get().proxy_name == "Bobs automotive"


def test_non_ascii_names_survive_the_relay(live, conversation, mail_servers):
    conversation.party_b_name = ""
    conversation.save(update_fields=["party_b_name"])
    proxy = conversation.proxy_address
    live.send(eml("non_ascii_headers.eml", sender=PARTY_B, to=proxy), mail_from=PARTY_B, to=proxy)
    relayed = parse(mail_servers.mx.received[0].data)
    assert relayed["From"] == f"Élodie Müller <{proxy}>"  # the sender's own display name
    assert relayed["Subject"] == "Prüfung der Angebote — 日本"


def test_mail_from_a_stranger_is_refused_and_recorded(live, conversation, mail_servers):
    proxy = conversation.proxy_address
    live.send(
        eml("gmail_reply.eml", sender="mallory@evil.example", to=proxy),
        mail_from="mallory@evil.example",
        to=proxy,
    )
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "mallory@evil.example is not a party of conversation" in inbound.error
    assert not Message.objects.exists()
    assert mail_servers.mx.received == []


def test_auto_replies_to_a_proxy_address_are_not_relayed(live, conversation, mail_servers):
    proxy = conversation.proxy_address
    live.send(eml("auto_reply.eml", sender=PARTY_B, to=proxy), mail_from=PARTY_B, to=proxy)
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "Auto-Submitted" in inbound.error
    assert mail_servers.mx.received == []


def test_one_message_to_an_alias_and_a_proxy_becomes_two_messages(live, conversation, mail_servers):
    proxy = conversation.proxy_address
    raw = eml("gmail_reply.eml", sender=PARTY_B, to=ALIAS)
    live.send(raw, mail_from=PARTY_B, to=[ALIAS, proxy])
    assert sorted(Message.objects.values_list("direction", flat=True)) == ["alias", "relay"]
    assert sorted(r.rcpt_tos[0] for r in mail_servers.mx.received) == [
        PARTY_A,
        "sales@example.net",
    ]


# --- Bounces --------------------------------------------------------------------------------


def test_a_dsn_to_the_verp_address_marks_the_relayed_message_bounced_and_is_not_relayed(
    live, conversation, mail_servers
):
    proxy = conversation.proxy_address
    live.send(eml("gmail_reply.eml", sender=PARTY_B, to=proxy), mail_from=PARTY_B, to=proxy)
    relayed = Message.objects.get()
    bounce_to = verp_address(relayed)
    dsn = eml("postfix_dsn_to_verp.eml", sender=PARTY_A, to=bounce_to)
    live.send(dsn, mail_from="", to=bounce_to)

    relayed.refresh_from_db()
    assert relayed.disposition == Disposition.RECEIVED_BOUNCED
    assert "5.1.1" in relayed.status_detail
    assert len(mail_servers.mx.received) == 1  # only the relay itself: the DSN went nowhere
    assert InboundMessage.objects.filter(status="routed").count() == 2


def test_a_dsn_sent_to_a_proxy_address_is_not_relayed_to_a_party(live, conversation, mail_servers):
    proxy = conversation.proxy_address
    live.send(eml("postfix_dsn_to_verp.eml", sender=PARTY_B, to=proxy), mail_from="", to=proxy)
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "delivery report" in inbound.error
    assert mail_servers.mx.received == []


def test_a_forged_bounce_address_is_refused_at_rcpt(live, link):
    with live.client() as smtp:
        smtp.ehlo("mx.example.net")
        smtp.mail("")
        code, _ = smtp.rcpt("b+" + "0" * 32 + ".0123456789abcdef@iovox.email")
    assert code == 550


# --- The worker -----------------------------------------------------------------------------


def test_a_message_is_stored_pending_and_routed_once(inbound_server, link, mail_servers):
    from django_q.models import OrmQ

    inbound_server.send(eml("auto_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from="", to=ALIAS)
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.PENDING
    assert not OrmQ.objects.exists()  # the routing loop finds it: nothing is enqueued

    assert inbound_route(inbound_pk=inbound.pk).status == InboundMessage.Status.ROUTED
    assert inbound_route(inbound_pk=inbound.pk) is None  # a second worker finds nothing to do
    assert Message.objects.count() == 1


def test_a_routing_failure_is_recorded_and_leaves_no_half_made_messages(
    inbound_server, link, conversation, monkeypatch
):
    inbound_server.send(
        eml("gmail_reply.eml", sender=PARTY_B, to=ALIAS),
        mail_from=PARTY_B,
        to=[ALIAS, conversation.proxy_address],
    )
    calls = []

    def relay_breaks(routing, address, conversation):
        calls.append(address)
        raise RuntimeError("relay exploded")

    monkeypatch.setattr("conversations.inbound.routing.relay", relay_breaks)
    inbound = inbound_route(inbound_pk=InboundMessage.objects.get().pk)
    assert calls == [conversation.proxy_address]
    assert inbound.status == InboundMessage.Status.DEFERRED  # tried again later (bounded)
    assert inbound.error == "attempt 1: RuntimeError: relay exploded"
    assert inbound.retry_at is not None
    assert not Message.objects.exists()


def test_a_null_envelope_sender_is_not_relayed(live, conversation, mail_servers):
    proxy = conversation.proxy_address
    live.send(eml("gmail_reply.eml", sender=PARTY_B, to=proxy), mail_from="", to=proxy)
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "null envelope sender" in inbound.error
    assert mail_servers.mx.received == []


def test_a_from_that_names_no_party_is_refused_even_when_the_envelope_does(
    live, conversation, mail_servers
):
    proxy = conversation.proxy_address
    raw = eml("gmail_reply.eml", sender="billy.alias@mail.example.org", to=proxy)
    live.send(raw, mail_from=PARTY_B.upper(), to=proxy)
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "billy.alias@mail.example.org is not a party of conversation" in inbound.error
    assert mail_servers.mx.received == []


def test_raw_utf8_headers_are_stored_and_forwarded_unchanged(live, link, mail_servers):
    raw = "From: Jörg Müller <j@x.example>\r\nTo: {a}\r\nSubject: Grüße aus Köln\r\n\r\nHallo\r\n"
    raw = raw.format(a=ALIAS).encode()
    live.send(raw, mail_from="j@x.example", to=ALIAS)
    message = Message.objects.get()
    assert (message.sender_name, message.subject) == ("Jörg Müller", "Grüße aus Köln")
    assert "Subject: Grüße aus Köln".encode() in mail_servers.mx.received[0].data


def test_an_out_of_office_reply_to_the_return_path_is_not_a_bounce(
    live, conversation, mail_servers
):
    proxy = conversation.proxy_address
    live.send(eml("gmail_reply.eml", sender=PARTY_B, to=proxy), mail_from=PARTY_B, to=proxy)
    relayed = Message.objects.get()
    bounce_to = verp_address(relayed)
    live.send(eml("auto_reply.eml", sender=PARTY_A, to=bounce_to), mail_from="", to=bounce_to)
    relayed.refresh_from_db()
    assert relayed.disposition == Disposition.SENT
    inbound = InboundMessage.objects.order_by("pk").last()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "not a delivery report" in inbound.error


def test_a_plain_text_bounce_of_an_older_server_marks_the_forwarded_message(
    live, link, mail_servers
):
    live.send(eml("auto_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from="", to=ALIAS)
    forwarded = Message.objects.get()
    bounce_to = verp_address(forwarded)
    raw = eml("plain_bounce.eml").replace(b"{{VERP}}", bounce_to.encode())
    raw = raw.replace(b"{{RECIPIENT}}", b"sales@example.net")
    live.send(raw, mail_from="", to=bounce_to)
    forwarded.refresh_from_db()
    assert forwarded.disposition == Disposition.RECEIVED_BOUNCED
    assert "552" in forwarded.status_detail


def test_one_failing_message_does_not_hold_back_the_others(
    inbound_server, link, conversation, monkeypatch
):
    from conversations.inbound.routing import inbound_route_pending

    proxy = conversation.proxy_address
    inbound_server.send(eml("auto_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from="", to=ALIAS)
    inbound_server.send(
        eml("gmail_reply.eml", sender=PARTY_B, to=proxy), mail_from=PARTY_B, to=proxy
    )
    inbound_server.send(eml("auto_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from="", to=ALIAS)

    def relay_breaks(routing, address, conversation):
        raise RuntimeError("relay exploded")

    monkeypatch.setattr("conversations.inbound.routing.relay", relay_breaks)
    assert inbound_route_pending() == 3
    statuses = list(InboundMessage.objects.order_by("pk").values_list("status", flat=True))
    assert statuses == ["routed", "deferred", "routed"]
    assert Message.objects.count() == 2


# --- Routing in batches ---------------------------------------------------------------------


def send_pending(server, conversation, subjects: list[str]) -> None:
    """Store one message per subject, without routing it yet: to the alias, or to the proxy
    address for a subject starting with "relay"."""
    for subject in subjects:
        to = conversation.proxy_address if subject.startswith("relay") else ALIAS
        raw = eml("gmail_reply.eml", sender=PARTY_B, to=to)
        raw = raw.replace(b"Subject: Re: Your test drive", f"Subject: {subject}".encode())
        server.send(raw, mail_from=PARTY_B, to=to)


def routed_subjects() -> list[tuple[str, list[str]]]:
    return [
        (inbound.status, [message.subject for message in inbound.messages.all()])
        for inbound in InboundMessage.objects.order_by("pk").prefetch_related("messages")
    ]


def test_a_batch_is_routed_together(inbound_server, conversation, django_assert_max_num_queries):
    from conversations.inbound.routing import inbound_route_pending

    subjects = ["one", "relay two", "three", "relay four", "five", "six"]
    send_pending(inbound_server, conversation, subjects)
    # One batch, not a message at a time. The relayed messages add a few: each looks up its
    # Message-IDs and remembers a new one (conversation_relay_thread: one, or four), and their
    # rows record a verdict (one UPDATE more); and which events the account's webhooks want,
    # once per WEBHOOK_SUBSCRIPTION_CACHE_SECONDS.
    # Alias mail opens or continues the writer's conversation and maps its Message-ID as
    # relayed mail does: a few more.
    with django_assert_max_num_queries(40):
        assert inbound_route_pending() == 6
    assert routed_subjects() == [("routed", [subject]) for subject in subjects]
    relayed = Message.objects.filter(direction=Direction.RELAY)
    assert set(relayed.values_list("recipient_address", flat=True)) == {PARTY_A}


def test_a_poison_message_in_the_middle_of_a_batch_fails_alone(
    inbound_server, conversation, monkeypatch
):
    from conversations.inbound.routing import inbound_route_pending

    send_pending(inbound_server, conversation, ["one", "two", "relay three", "four", "five"])

    def relay_breaks(routing, address, conversation):
        raise RuntimeError("relay exploded")

    monkeypatch.setattr("conversations.inbound.routing.relay", relay_breaks)
    assert inbound_route_pending() == 5
    assert routed_subjects() == [
        ("routed", ["one"]),
        ("routed", ["two"]),
        ("deferred", []),
        ("routed", ["four"]),
        ("routed", ["five"]),
    ]
    assert Message.objects.count() == 4  # nothing half-made for the poison one
