"""Mail to a link's alias reaches the contact as receivers trust it, and the reply comes back:
through the real SMTP server (admission at end of DATA), the worker's routing and delivery,
out to the aiosmtpd sink; the loopback DNS server publishes the writers' SPF, DKIM and DMARC
and our keys, and what the sink got is checked with dkimpy as a receiver checks it (DKIM,
ARC, DMARC alignment)."""

from __future__ import annotations

import email
import email.policy
import functools
import json
import smtplib

import dkim
import dns.resolver as dns_resolver
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from conversations.models import Conversation, InboundMessage
from tests.conversations.conftest import ALIAS, WorkedServer, keys_signing
from tests.factories import ApiCredentialFactory
from tests.mailservers import dkim_signatures
from tests.portal.conftest import portal_client
from tracking.models import Direction, Message
from tracking.services.dkim_keys import dkim_key_generate

WRITER_DOMAIN = "writer.example"
WRITER = f"lead@{WRITER_DOMAIN}"
CONTACT = "sales@example.net"  # the link fixture's destination contact


THIS_YEAR = {
    "start_date": f"{timezone.now().year}-01-01 00:00:00",
    "end_date": f"{timezone.now().year}-12-31 23:59:59",
}


def api_client(account) -> APIClient:
    """An API client of the link's account."""
    key = "owner-secure-key-0123456789abcdef0123456789"
    ApiCredentialFactory(account=account, username="owner", secure_key=key)
    client = APIClient()
    client.credentials(HTTP_USERNAME="owner", HTTP_SECUREKEY=key)
    return client


@functools.cache
def writer_key() -> tuple[str, str]:
    return dkim_key_generate(bits=1024)


def lead(
    *, sender: str = WRITER, to: str = ALIAS, subject: str = "Is the Civic available?", extra=""
) -> bytes:
    return (
        f"From: Lee Lead <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 10:20:00 +0000\r\nMessage-ID: <lead-1@writer.example>\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n{extra}\r\n"
        "Hello, is it still for sale?\r\n"
    ).encode()


def signed(raw: bytes) -> bytes:
    return (
        dkim.sign(
            raw,
            b"sel1",
            WRITER_DOMAIN.encode(),
            writer_key()[0].encode(),
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
        )
        + raw
    )


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def txt_lookup(dns_server):
    """dkimpy's dnsfunc, answered by the loopback DNS server (as a receiver's resolver)."""
    resolver = dns_resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=2)
        except (dns_resolver.NXDOMAIN, dns_resolver.NoAnswer):
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    return txt


@pytest.fixture
def live(inbound_server, link, mail_servers, settings):
    """Our alias (and bounce) domain's key published and active; the writer's domain has an
    MX (the sink), so the contact's reply can reach the writer."""
    mail_servers.dns.route(WRITER_DOMAIN)
    keys_signing(mail_servers.dns, settings.ALIAS_DOMAIN)
    return WorkedServer(inbound_server.host, inbound_server.port)


@pytest.fixture
def dns(mail_servers):
    return mail_servers.dns


def reject_policy(dns) -> None:
    """The writer's domain sends from elsewhere (SPF fails for us), signs, asks reject."""
    dns.add_spf(WRITER_DOMAIN, "v=spf1 ip4:192.0.2.10 -all")
    dns.add_dkim(WRITER_DOMAIN, "sel1", writer_key()[1])
    dns.add_dmarc(WRITER_DOMAIN, "v=DMARC1; p=reject")


def test_a_signed_lead_from_a_reject_domain_arrives_signed_aligned_and_sealed(
    live, link, dns, mail_servers, settings
):
    reject_policy(dns)
    live.send(signed(lead()), mail_from=WRITER, to=ALIAS)

    inbound = InboundMessage.objects.get()
    assert (inbound.status, inbound.spf, inbound.dkim, inbound.dmarc) == (
        "routed",
        "fail",
        "pass",
        "pass",
    )
    assert not inbound.quarantined
    conversation = Conversation.objects.get(kind=Conversation.Kind.ALIAS)
    reverse = conversation.proxy_address
    assert reverse.endswith("@" + settings.ALIAS_DOMAIN)
    [received] = mail_servers.mx.received
    assert received.rcpt_tos == [CONTACT]
    forwarded = parse(received.data)
    [shown] = forwarded["From"].addresses
    assert (shown.display_name, shown.addr_spec) == (f"Lee Lead ({WRITER})", reverse)
    assert forwarded["X-Original-From"] == f"Lee Lead <{WRITER}>"
    assert forwarded["X-Spam-Flag"] is None
    # DKIM: ours first, by the From domain (DMARC alignment); the writer's, which our new
    # From breaks, below.
    signatures = dkim_signatures(received.data, dns)
    assert signatures[0] == (settings.ALIAS_DOMAIN, True)
    assert (WRITER_DOMAIN, False) in signatures
    # ARC: one set of ours that a receiver verifies, carrying the writer's DKIM pass.
    cv, _results, comment = dkim.arc_verify(received.data, dnsfunc=txt_lookup(dns))
    assert cv == dkim.CV_Pass, comment
    arc_results = forwarded["ARC-Authentication-Results"]
    assert arc_results.startswith("i=1; localhost;")
    assert f"dkim=pass header.d={WRITER_DOMAIN}" in arc_results
    assert f"dmarc=pass header.from={WRITER_DOMAIN}" in arc_results
    message = Message.objects.get()
    assert message.conversation_id == conversation.conversation_id
    assert message.direction == Direction.ALIAS


def test_a_forged_lead_from_a_reject_domain_is_refused_with_550_and_recorded(
    live, dns, mail_servers
):
    reject_policy(dns)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        live.send(lead(), mail_from=WRITER, to=ALIAS)  # unsigned, from an IP SPF refuses
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 ")
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert inbound.authentication["dmarc"] == "fail"
    assert inbound.authentication["dmarc_disposition"] == "reject"
    assert mail_servers.mx.received == [] and not Message.objects.exists()
    assert not Conversation.objects.exists()


def test_a_lead_from_a_domain_that_publishes_nothing_is_forwarded_marked_none(live, mail_servers):
    live.send(lead(), mail_from=WRITER, to=ALIAS)
    inbound = InboundMessage.objects.get()
    assert inbound.status == "routed"
    assert (inbound.spf, inbound.dkim, inbound.dmarc) == ("none", "none", "none")
    [received] = mail_servers.mx.received
    assert "spf=none" in parse(received.data)["Authentication-Results"]


def test_a_quarantine_failure_is_forwarded_marked_and_counted(live, dns, mail_servers):
    dns.add_spf(WRITER_DOMAIN, "v=spf1 ip4:192.0.2.10 -all")
    dns.add_dmarc(WRITER_DOMAIN, "v=DMARC1; p=quarantine")
    live.send(lead(extra="X-Spam-Flag: NO\r\n"), mail_from=WRITER, to=ALIAS)
    inbound = InboundMessage.objects.get()
    assert inbound.status == "routed" and inbound.quarantined
    assert InboundMessage.objects.filter(quarantined=True).count() == 1
    [received] = mail_servers.mx.received
    forwarded = parse(received.data)
    assert forwarded.get_all("X-Spam-Flag") == ["YES"]  # the writer's "NO" is gone
    assert forwarded["X-Iovox-Quarantine"] == (
        f"dmarc=fail (p=quarantine) header.from={WRITER_DOMAIN}"
    )


def test_the_writers_reply_to_becomes_the_reverse_address(live, mail_servers):
    live.send(lead(extra=f"Reply-To: Lee at home <home@{WRITER_DOMAIN}>\r\n"), mail_from=WRITER,
              to=ALIAS)  # fmt: skip
    reverse = Conversation.objects.get().proxy_address
    [received] = mail_servers.mx.received
    forwarded = parse(received.data)
    assert forwarded["Reply-To"] == reverse
    assert b"home@writer.example" not in received.data


def test_the_contacts_reply_reaches_the_writer_from_the_alias_and_threads(live, link, mail_servers):
    live.send(lead(), mail_from=WRITER, to=ALIAS)
    conversation = Conversation.objects.get()
    [forwarded] = mail_servers.mx.received
    ours = parse(forwarded.data)["Message-ID"]
    reply = (
        f"From: Sales desk <{CONTACT}>\r\nTo: {conversation.proxy_address}\r\n"
        f"Subject: Re: Is the Civic available?\r\nIn-Reply-To: {ours}\r\n"
        "Date: Mon, 23 Nov 2026 11:00:00 +0000\r\nMessage-ID: <reply-1@example.net>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nYes, come by Thursday.\r\n"
    ).encode()
    live.send(reply, mail_from=CONTACT, to=conversation.proxy_address)

    back = mail_servers.mx.received[1]
    assert back.rcpt_tos == [WRITER]
    relayed = parse(back.data)
    [shown] = relayed["From"].addresses
    assert (shown.display_name, shown.addr_spec) == ("Sales desk", ALIAS)
    assert relayed["In-Reply-To"] == "<lead-1@writer.example>"  # the writer's own id again
    assert relayed["X-Original-From"] is None
    assert CONTACT.encode() not in back.data
    thread = Message.objects.filter(conversation_id=conversation.conversation_id)
    assert list(thread.order_by("pk").values_list("direction", "link")) == [
        (Direction.ALIAS, link.pk),
        (Direction.RELAY, link.pk),
    ]
    # the writer's next message to the alias continues the same conversation
    live.send(lead(subject="Thursday works"), mail_from=WRITER, to=ALIAS)
    assert Conversation.objects.count() == 1
    assert thread.count() == 3
    # and search finds the whole of it by its conversation_id
    found = api_client(link.account).get(
        "/rest/v1/email/search",
        {"conversation_id": str(conversation.conversation_id), **THIS_YEAR},
    )
    assert found.status_code == 200, found.content
    results = json.loads(b"".join(found.streaming_content))["results"]
    assert {row["message_id"] for row in results} == {
        str(m) for m in thread.values_list("message_id", flat=True)
    }


def test_a_stranger_writing_to_a_reverse_address_is_refused_and_recorded(live, mail_servers):
    live.send(lead(), mail_from=WRITER, to=ALIAS)
    reverse = Conversation.objects.get().proxy_address
    live.send(lead(sender="mallory@example.net", to=reverse), mail_from="mallory@example.net",
              to=reverse)  # fmt: skip
    inbound = InboundMessage.objects.order_by("pk").last()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "mallory@example.net is not a party of conversation" in inbound.error
    assert len(mail_servers.mx.received) == 1  # the lead only


def test_a_dns_timeout_at_end_of_data_is_a_451_and_nothing_is_stored(live, dns, mail_servers):
    dns.timeouts.add(WRITER_DOMAIN)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        live.send(lead(), mail_from=WRITER, to=ALIAS)
    assert deferred.value.smtp_code == 451
    assert deferred.value.smtp_error.startswith(b"4.7.0 ")
    assert not InboundMessage.objects.exists() and mail_servers.mx.received == []


def test_the_verdicts_are_in_the_api_detail_and_on_the_portal_page(live, link, dns, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    reject_policy(dns)
    live.send(signed(lead()), mail_from=WRITER, to=ALIAS)
    message = Message.objects.get()
    detail = api_client(link.account).get(f"/rest/v1/email/{message.message_id}").json()
    assert detail["authentication"]["dmarc"] == "pass"
    assert detail["authentication"]["signatures"] == [
        {"domain": WRITER_DOMAIN, "selector": "sel1", "result": "pass"}
    ]
    assert detail["authentication"]["quarantined"] is False

    page = portal_client(link.account, "owner-user").get(f"/messages/{message.message_id}")
    html = page.content.decode()
    assert "Sender authentication" in html
    assert "DMARC pass" in html and "DKIM pass" in html and "SPF fail" in html
    assert str(message.conversation_id) in html  # the thread of the link's conversation


def test_inbound_receive_takes_mail_from_any_source_through_the_same_admission(
    live, dns, mail_servers
):
    """The entry point for mail an ESP's inbound webhook brings (no SMTP session of ours):
    the same admission, then the same routing."""
    from conversations.inbound.raw_mail import Envelope
    from conversations.inbound.receive import inbound_receive
    from tests.worker import work

    reject_policy(dns)
    envelope = Envelope(mail_from=WRITER, helo="mx.esp.example", peer="127.0.0.1")
    refused = inbound_receive(raw=lead(), recipients=[ALIAS], envelope=envelope)
    assert refused.startswith("550 5.7.1 ")
    stored = inbound_receive(raw=signed(lead()), recipients=[ALIAS], envelope=envelope)
    assert isinstance(stored, InboundMessage) and stored.dmarc == "pass"
    dns.timeouts.add(f"_dmarc.{WRITER_DOMAIN}")
    assert inbound_receive(raw=lead(), recipients=[ALIAS], envelope=envelope).startswith("451 ")
    work()
    assert [m.rcpt_tos for m in mail_servers.mx.received] == [[CONTACT]]
    assert list(InboundMessage.objects.order_by("pk").values_list("status", flat=True)) == [
        "refused",
        "routed",
    ]


def test_a_from_address_too_long_to_be_a_party_is_forwarded_as_it_came(live, mail_servers):
    """Hostile input: no conversation can hold it, nothing fails."""
    long_sender = "x" * 250 + "@" + WRITER_DOMAIN
    raw = lead(sender=long_sender).replace(b"Lee Lead", b"Lee " * 80)  # a 320-character name
    live.send(raw, mail_from=WRITER, to=ALIAS)
    assert InboundMessage.objects.get().status == "routed"
    assert not Conversation.objects.exists()
    [received] = mail_servers.mx.received
    assert long_sender.encode() in received.data


def test_a_lead_that_arrives_sealed_by_another_forwarder_gets_our_seal_on_the_chain(
    live, dns, mail_servers
):
    """A mailing list (list.example) sealed the writer's message before us: our set is i=2,
    our Authentication-Results says the chain we found passed, and the receiver's check of
    the whole chain passes."""
    dns.add_spf(WRITER_DOMAIN, "v=spf1 ip4:192.0.2.10 -all")
    dns.add_dkim(WRITER_DOMAIN, "sel1", writer_key()[1])
    dns.add_dkim("list.example", "arc1", writer_key()[1])
    raw = signed(lead())
    listed = b"Authentication-Results: list.example; dkim=pass header.d=writer.example\r\n" + raw
    sealed = b"".join(
        dkim.arc_sign(listed, b"arc1", b"list.example", writer_key()[0].encode(), b"list.example")
    )
    live.send(sealed + listed, mail_from=WRITER, to=ALIAS)

    inbound = InboundMessage.objects.get()
    assert inbound.authentication["arc"] == "pass"
    assert "arc=pass" in inbound.authentication_results
    [received] = mail_servers.mx.received
    cv, results, comment = dkim.arc_verify(received.data, dnsfunc=txt_lookup(dns))
    assert cv == dkim.CV_Pass, comment
    assert [r["instance"] for r in results] == [2, 1]
