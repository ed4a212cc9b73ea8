"""Who may write through a proxy address, and what the other party gets to see.

End to end: smtplib to our real SMTP server from 127.0.0.1, routing in the worker (its loops'
turns after each message, tests/worker.py), SPF, DKIM and DMARC records served by the loopback
DNS server, messages signed here with dkimpy by a key that server publishes, and the aiosmtpd
sink standing in for the other party's MX."""

from __future__ import annotations

import email
import email.policy
import functools
import smtplib
from datetime import timedelta

import dkim
import pytest
import time_machine
from django.utils import timezone

from conversations import tasks
from conversations.models import InboundMessage, RelayedMessageId
from conversations.tasks import routing_turn
from tests.conversations.conftest import PARTY_A, PARTY_B, WorkedServer
from tests.worker import work
from tracking.models import Message
from tracking.services.dkim_keys import dkim_key_generate

DEALER = "dealer.example.net"  # party A's domain


@functools.cache
def dealer_key() -> tuple[str, str]:
    return dkim_key_generate(bits=1024)


def message(
    *,
    sender: str,
    to: str,
    subject: str = "About the Civic",
    message_id: str = "",
    in_reply_to: str = "",
    references: str = "",
    extra: str = "",
    body: str = "Is it still available?\r\n",
) -> bytes:
    headers = [
        f"From: Someone <{sender}>",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Mon, 23 Nov 2026 10:20:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if message_id:
        headers.append(f"Message-ID: {message_id}")
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {references}")
    return ("\r\n".join(headers) + "\r\n" + extra + "\r\n" + body).encode()


def signed(raw: bytes, domain: str = DEALER, selector: str = "sel1") -> bytes:
    header = dkim.sign(
        raw,
        selector.encode(),
        domain.encode(),
        dealer_key()[0].encode(),
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    return header + raw


@pytest.fixture
def live(inbound_server, mail_servers):
    mail_servers.dns.route(DEALER)
    return WorkedServer(inbound_server.host, inbound_server.port)


@pytest.fixture
def dns(mail_servers):
    return mail_servers.dns


def from_dealer(live, conversation, raw: bytes | None = None, *, mail_from: str = PARTY_A):
    proxy = conversation.proxy_address
    live.send(raw or message(sender=PARTY_A, to=proxy), mail_from=mail_from, to=proxy)
    return InboundMessage.objects.order_by("pk").last()


def header_block(data: bytes) -> str:
    return data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")


# --- Who wrote it -------------------------------------------------------------------------


def test_a_forged_from_with_a_real_partys_address_is_refused_and_recorded(
    live, conversation, dns, mail_servers
):
    """The dealer's domain sends only from its own servers (SPF) and asks for rejection of
    anything else (DMARC): mail From its address sent from elsewhere is refused at end of
    DATA, and recorded."""
    dns.add_spf(DEALER, "v=spf1 ip4:192.0.2.10 -all").add_dmarc(DEALER, "v=DMARC1; p=reject")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        from_dealer(live, conversation)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 Rejected by the DMARC policy of")
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert inbound.error.startswith("550 5.7.1 ")
    assert (inbound.spf, inbound.dkim, inbound.dmarc) == ("fail", "none", "fail")
    assert inbound.authentication["dmarc_disposition"] == "reject"
    assert inbound.authentication_results == (
        f"localhost; spf=fail smtp.mailfrom={DEALER}; dmarc=fail (dis=reject) header.from={DEALER}"
    )
    assert not Message.objects.exists()
    assert mail_servers.mx.received == []


def test_a_from_naming_a_party_with_a_strangers_envelope_is_refused(
    live, conversation, dns, mail_servers
):
    """Mallory's own domain passes SPF, but it is not the party's: envelope and From must
    agree on the party."""
    dns.add_spf("evil.example", "v=spf1 ip4:127.0.0.1 -all")
    inbound = from_dealer(live, conversation, mail_from="mallory@evil.example")
    assert inbound.status == InboundMessage.Status.REFUSED
    assert f"the envelope sender mallory@evil.example is not {PARTY_A}'s" in inbound.error
    assert mail_servers.mx.received == []


def test_a_from_with_two_addresses_is_refused(live, conversation, dns, mail_servers):
    dns.add_spf(DEALER, "v=spf1 ip4:127.0.0.1 -all")
    raw = message(sender=PARTY_A, to=conversation.proxy_address).replace(
        f"<{PARTY_A}>".encode(), f"<{PARTY_A}>, mallory@evil.example".encode()
    )
    inbound = from_dealer(live, conversation, raw)
    assert inbound.status == InboundMessage.Status.REFUSED
    assert mail_servers.mx.received == []


def test_a_party_whose_mail_passes_spf_is_relayed(live, conversation, dns, mail_servers):
    dns.add_spf(DEALER, "v=spf1 ip4:127.0.0.1 -all").add_dmarc(DEALER, "v=DMARC1; p=reject")
    inbound = from_dealer(live, conversation)
    assert inbound.status == InboundMessage.Status.ROUTED
    assert (inbound.spf, inbound.dkim, inbound.dmarc) == ("pass", "none", "pass")
    assert inbound.authentication_results.startswith(
        f"localhost; spf=pass smtp.mailfrom={DEALER}; dmarc=pass"
    )
    [received] = mail_servers.mx.received
    assert received.rcpt_tos == [PARTY_B]


def test_a_party_whose_mail_passes_dkim_only_is_relayed(live, conversation, dns, mail_servers):
    """Sent through a server its SPF does not list (a forwarder, a mailing service), signed
    by its domain: DKIM is evidence enough."""
    dns.add_spf(DEALER, "v=spf1 ip4:192.0.2.10 -all").add_dmarc(DEALER, "v=DMARC1; p=reject")
    dns.add_dkim(DEALER, "sel1", dealer_key()[1])
    raw = signed(message(sender=PARTY_A, to=conversation.proxy_address))
    inbound = from_dealer(live, conversation, raw)
    assert inbound.status == InboundMessage.Status.ROUTED
    assert (inbound.spf, inbound.dkim, inbound.dmarc) == ("fail", "pass", "pass")
    assert f"dkim=pass header.d={DEALER} header.s=sel1" in inbound.authentication_results
    assert len(mail_servers.mx.received) == 1
    assert b"DKIM-Signature" not in mail_servers.mx.received[0].data  # it names the domain


def test_a_signed_message_altered_on_the_way_is_refused(live, conversation, dns, mail_servers):
    dns.add_dkim(DEALER, "sel1", dealer_key()[1])
    raw = signed(message(sender=PARTY_A, to=conversation.proxy_address))
    raw = raw.replace(b"still available", b"still for sale!")
    inbound = from_dealer(live, conversation, raw)
    assert inbound.status == InboundMessage.Status.REFUSED
    assert f"DKIM fail (d={DEALER})" in inbound.error
    assert mail_servers.mx.received == []


def test_a_signature_by_another_domain_is_no_evidence(live, conversation, dns, mail_servers):
    dns.add_spf(DEALER, "v=spf1 -all").add_dkim("evil.example", "sel1", dealer_key()[1])
    raw = signed(message(sender=PARTY_A, to=conversation.proxy_address), domain="evil.example")
    inbound = from_dealer(live, conversation, raw)
    assert inbound.dkim == "pass"
    assert inbound.status == InboundMessage.Status.REFUSED
    assert f"DKIM none by {DEALER}" in inbound.error


def test_a_party_whose_domain_publishes_nothing_is_taken_at_its_word(
    live, conversation, mail_servers
):
    """No SPF, no DKIM, no DMARC: the envelope and From agreeing is all there is to check."""
    inbound = from_dealer(live, conversation, mail_from=f"bounces@{DEALER}")
    assert inbound.status == InboundMessage.Status.ROUTED
    assert (inbound.spf, inbound.dkim, inbound.dmarc) == ("none", "none", "none")
    assert len(mail_servers.mx.received) == 1


def test_an_envelope_on_a_subdomain_without_spf_does_not_escape_the_domains_spf(
    live, conversation, dns, mail_servers
):
    """The dealer's domain publishes SPF; a forger picks an envelope sender on a subdomain
    that publishes none. SPF `none` there says nothing of the dealer's domain."""
    dns.add_spf(DEALER, "v=spf1 ip4:192.0.2.10 -all")
    inbound = from_dealer(live, conversation, mail_from=f"x@nothing-here.{DEALER}")
    assert (inbound.status, inbound.spf) == ("refused", "none")
    assert mail_servers.mx.received == []


def test_a_domain_that_publishes_only_dmarc_must_authenticate(live, conversation, dns):
    dns.add_dmarc(DEALER, "v=DMARC1; p=none")
    inbound = from_dealer(live, conversation)
    assert inbound.status == InboundMessage.Status.REFUSED
    assert inbound.dmarc == "fail"


def test_a_dns_timeout_is_a_451_until_dns_answers(live, conversation, dns, mail_servers):
    """Never a silent pass, nor a refusal: the sender is told to try again, nothing is
    stored, and the next try goes through once DNS answers."""
    dns.timeouts.add(DEALER)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        from_dealer(live, conversation)
    assert deferred.value.smtp_code == 451
    assert deferred.value.smtp_error.startswith(b"4.7.0 ")
    assert not InboundMessage.objects.exists() and mail_servers.mx.received == []

    dns.timeouts.clear()
    dns.add_spf(DEALER, "v=spf1 ip4:127.0.0.1 -all")
    inbound = from_dealer(live, conversation)
    assert (inbound.status, inbound.spf) == ("routed", "pass")
    assert len(mail_servers.mx.received) == 1


def test_a_dmarc_lookup_that_times_out_is_a_451(live, conversation, dns):
    dns.timeouts.add(f"_dmarc.{DEALER}")
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        from_dealer(live, conversation)
    assert deferred.value.smtp_code == 451
    assert not InboundMessage.objects.exists()


# --- What the other party sees ------------------------------------------------------------

LEAKY_HEADERS = (
    "Received: from [10.1.2.3] (dsl-10-1-2-3.isp.example [198.51.100.7])\r\n"
    f"\tby smtp.{DEALER} (Postfix) with ESMTPSA id 4AbC; Mon, 23 Nov 2026 10:19:58 +0000\r\n"
    f"Received: from laptop.{DEALER} (laptop.{DEALER} [10.1.2.3]) by smtp.{DEALER}\r\n"
    f"X-Sender: {PARTY_A}\r\n"
    f"X-Envelope-From: <{PARTY_A}>\r\n"
    f"Resent-From: Dealer Dan <{PARTY_A}>\r\n"
    f"Resent-Sender: {PARTY_A}\r\n"
    f"Resent-Message-ID: <resent1@{DEALER}>\r\n"
    f"X-Google-Original-From: Dealer Dan <{PARTY_A}>\r\n"
    f"X-Authenticated-Sender: {PARTY_A}\r\n"
    "X-Originating-IP: [198.51.100.7]\r\n"
    f"Reply-To: Dan at home <dan.home@{DEALER}>\r\n"
    f"Sender: {PARTY_A}\r\n"
    f"Return-Receipt-To: {PARTY_A}\r\n"
    f"Disposition-Notification-To: {PARTY_A}\r\n"
    f"Cc: boss@{DEALER}\r\n"
    f"List-Unsubscribe: <mailto:unsubscribe@{DEALER}>\r\n"
    "X-Mailer: Dealer CRM 4.2 (build 7; host crm01)\r\n"
    f"Autocrypt: addr={PARTY_A}; keydata=bWFkZSB1cA==\r\n"
    "X-Iovox-Verified: yes\r\n"
)


def test_nothing_that_names_the_writer_or_their_machine_reaches_the_other_party(
    live, conversation, dns, mail_servers
):
    dns.add_spf(DEALER, "v=spf1 ip4:127.0.0.1 -all")
    raw = message(
        sender=PARTY_A,
        to=conversation.proxy_address,
        message_id=f"<CAB1234.5678@laptop.{DEALER}>",
        extra=LEAKY_HEADERS,
    )
    live.send(raw, mail_from=PARTY_A, to=conversation.proxy_address)
    [received] = mail_servers.mx.received
    headers = header_block(received.data)
    for secret in ("dealer", "10.1.2.3", "198.51.100.7", "127.0.0.1", "crm01", "Resent-", "X-"):
        if secret == "X-":
            assert [h for h in headers.split("\r\n") if h.startswith("X-")] == [
                f"X-Iovox-Loop: {conversation.proxy_address}"
            ]
        else:
            assert secret not in headers, secret
    relayed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert relayed["From"] == f"Bobs automotive <{conversation.proxy_address}>"
    assert relayed["Message-ID"].endswith("@proxy.example>")
    assert relayed["Subject"] == "About the Civic"
    assert relayed["Date"] == "Mon, 23 Nov 2026 10:20:00 +0000"
    # Our own trace line only, which names no client.
    [trace] = relayed.get_all("Received")
    assert trace.startswith("by localhost (iovox relay);")
    assert relayed.get_content() == "Is it still available?\r\n"


def test_threading_survives_a_three_message_exchange(live, conversation, dns, mail_servers):
    """Each party's mail client sees its own Message-IDs for its own messages and ours for
    the other's, and threads the conversation; neither sees the other's."""
    dns.add_spf(DEALER, "v=spf1 ip4:127.0.0.1 -all")
    proxy = conversation.proxy_address
    first_api_id = "<0f3c9a1e5b7d4c2a@iovox.email>"  # the conversation's first, sent by us

    # 1. Billy (party B) answers the dealer's first message.
    b1 = "<b1.4711@mail.example.net>"
    live.send(
        message(sender=PARTY_B, to=proxy, message_id=b1, in_reply_to=first_api_id),
        mail_from=PARTY_B,
        to=proxy,
    )
    to_a1 = email.message_from_bytes(mail_servers.mx.received[0].data)
    p1 = to_a1["Message-ID"]
    assert p1.endswith("@proxy.example>") and to_a1["In-Reply-To"] == first_api_id

    # 2. The dealer (party A) replies to what it got: P1.
    a1 = f"<a1.0815@{DEALER}>"
    live.send(
        message(sender=PARTY_A, to=proxy, message_id=a1, in_reply_to=p1, references=p1),
        mail_from=PARTY_A,
        to=proxy,
    )
    to_b = email.message_from_bytes(mail_servers.mx.received[1].data)
    p2 = to_b["Message-ID"]
    assert p2.endswith("@proxy.example>") and p2 != p1
    assert (to_b["In-Reply-To"], to_b["References"]) == (b1, b1)  # Billy's own id

    # 3. Billy replies to P2, naming his first message too.
    b2 = "<b2.4712@mail.example.net>"
    live.send(
        message(sender=PARTY_B, to=proxy, message_id=b2, in_reply_to=p2, references=f"{b1} {p2}"),
        mail_from=PARTY_B,
        to=proxy,
    )
    to_a2 = email.message_from_bytes(mail_servers.mx.received[2].data)
    assert to_a2["In-Reply-To"] == a1  # the dealer's own id
    assert to_a2["References"] == f"{p1} {a1}"
    assert to_a2["Message-ID"] not in (p1, p2)

    assert RelayedMessageId.objects.filter(conversation=conversation).count() == 3
    every_header = "".join(header_block(r.data) for r in mail_servers.mx.received)
    assert "mail.example.net" not in header_block(mail_servers.mx.received[0].data)
    assert DEALER not in header_block(mail_servers.mx.received[1].data)
    assert "b2.4712" not in every_header


def test_the_same_message_relayed_again_keeps_its_message_id(live, conversation, mail_servers):
    raw = message(sender=PARTY_B, to=conversation.proxy_address, message_id="<same@example.net>")
    live.send(raw, mail_from=PARTY_B, to=conversation.proxy_address)
    live.send(raw, mail_from=PARTY_B, to=conversation.proxy_address)
    ids = {email.message_from_bytes(r.data)["Message-ID"] for r in mail_servers.mx.received}
    assert len(ids) == 1 and len(mail_servers.mx.received) == 2


# --- NUL bytes ----------------------------------------------------------------------------

NUL_MESSAGE = (
    "From: Nul\x00Name <{sender}>\r\nTo: {to}\r\nSubject: hi\x00there\r\n"
    "Content-Type: text/plain\r\n\r\nbody\x00text\r\n"
)


def test_alias_mail_with_nuls_is_stored_and_forwarded_as_it_came(
    inbound_server, link, mail_servers
):
    raw = NUL_MESSAGE.format(sender="lead@gmail.example", to=link.email_address).encode()
    inbound_server.send(raw, mail_from="lead@gmail.example", to=link.email_address)
    work()
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.ROUTED, inbound.error
    assert bytes(inbound.raw).endswith(raw)
    forwarded = Message.objects.get()
    assert forwarded.subject == "hi\ufffdthere"
    assert forwarded.sender_name == "Nul\ufffdName"
    assert forwarded.text_content == "body\ufffdtext\r\n"
    [received] = mail_servers.mx.received
    assert b"Subject: hi\x00there\r\n" in received.data
    assert b"body\x00text" in received.data


def test_proxy_mail_with_nuls_is_relayed(live, conversation, mail_servers):
    raw = NUL_MESSAGE.format(sender=PARTY_B, to=conversation.proxy_address).encode()
    live.send(raw, mail_from=PARTY_B, to=conversation.proxy_address)
    assert InboundMessage.objects.get().status == InboundMessage.Status.ROUTED
    assert Message.objects.get().subject == "hi\ufffdthere"
    assert b"body\x00text" in mail_servers.mx.received[0].data


def test_nuls_in_the_helo_name_and_envelope_sender_are_stored_and_forwarded(
    inbound_server, link, mail_servers
):
    with inbound_server.client() as smtp:
        smtp.ehlo("client\x00host")
        assert smtp.mail("lead\x00@gmail.example")[0] == 250
        assert smtp.rcpt(link.email_address)[0] == 250
        code, _ = smtp.data(message(sender="lead@gmail.example", to=link.email_address))
    assert code == 250
    work()
    inbound = InboundMessage.objects.get()
    assert (inbound.helo, inbound.mail_from) == ("client\ufffdhost", "lead\ufffd@gmail.example")
    assert inbound.status == InboundMessage.Status.ROUTED
    assert len(mail_servers.mx.received) == 1


def test_a_bounce_with_nuls_marks_the_message_it_bounces(live, conversation, mail_servers):
    from tests.conversations.conftest import eml
    from tracking.delivery.verp import verp_address

    proxy = conversation.proxy_address
    live.send(message(sender=PARTY_B, to=proxy), mail_from=PARTY_B, to=proxy)
    relayed = Message.objects.get()
    bounce_to = verp_address(relayed)
    dsn = eml("postfix_dsn_to_verp.eml", sender=PARTY_A, to=bounce_to)
    dsn = dsn.replace(b"Recipient address rejected", b"Recipient\x00address rejected")
    live.send(dsn, mail_from="", to=bounce_to)
    assert InboundMessage.objects.order_by("pk").last().status == InboundMessage.Status.ROUTED
    relayed.refresh_from_db()
    assert relayed.disposition == "received_bounced"


# --- Routing that fails ---------------------------------------------------------------------


def test_a_message_that_keeps_failing_is_retried_then_failed_then_purged(
    inbound_server, link, settings, monkeypatch
):
    settings.INBOUND_RETRY_SCHEDULE = [60, 300]
    settings.INBOUND_RETENTION_DAYS = 30
    calls = []

    def forward_breaks(routing, address, link):
        calls.append(address)
        raise RuntimeError("forwarding exploded")

    monkeypatch.setattr("conversations.inbound.routing.forward_alias", forward_breaks)
    raw = message(sender="lead@gmail.example", to=link.email_address)
    inbound_server.send(raw, mail_from="lead@gmail.example", to=link.email_address)
    work()
    inbound = InboundMessage.objects.get()
    assert (inbound.status, inbound.attempts) == ("deferred", 1)

    start = timezone.now()
    for seconds, status in ((61, "deferred"), (61 + 301, "failed")):
        with time_machine.travel(start + timedelta(seconds=seconds)):
            work()
        inbound.refresh_from_db()
        assert inbound.status == status
    assert inbound.attempts == 3 and calls
    assert inbound.error == "gave up after 3 attempts: RuntimeError: forwarding exploded"
    with time_machine.travel(start + timedelta(days=29)):
        assert not routing_turn()  # failed stays failed: not routed again
        assert tasks.purge()["inbound_messages"] == 0
    with time_machine.travel(start + timedelta(days=31)):
        assert tasks.purge()["inbound_messages"] == 1
    assert not InboundMessage.objects.exists()
