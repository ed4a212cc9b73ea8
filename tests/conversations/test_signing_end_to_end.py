"""What we send from our domains arrives signed, checked as a receiver checks it: mail in
through our real SMTP server, routed and delivered by the worker (the real `qcluster` in a
subprocess, or django-q2's sync mode), out to the aiosmtpd sink; every DKIM signature verified
by dkimpy against the keys the loopback DNS server publishes."""

from __future__ import annotations

import email
import email.policy
import email.utils
import time

import pytest

from conversations.models import InboundMessage
from tests.conversations.conftest import ALIAS, CUSTOMER, PARTY_A, PARTY_B, eml, keys_signing
from tests.mailservers import dkim_signatures
from tests.worker import deliver_due, start_worker, stop_worker, work
from tracking.models import Disposition, Message

DEALER = PARTY_A.rpartition("@")[2]


def from_domain(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    return email.utils.parseaddr(str(message["From"]))[1].rpartition("@")[2]


@pytest.mark.django_db(transaction=True)
def test_relayed_proxy_mail_is_signed_by_the_proxy_domain_then_the_bounce_domain(
    inbound_server, conversation, mail_servers, settings
):
    """The real worker routes and delivers; the copy Billy gets is From the proxy address,
    signed by the proxy domain (DMARC-aligned, on top) and by the envelope's domain."""
    dns = mail_servers.dns
    dns.route(DEALER).add_spf(DEALER, "v=spf1 ip4:127.0.0.1 -all")
    keys_signing(dns, conversation.proxy_domain.domain, settings.BOUNCE_DOMAIN)
    worker = start_worker(mail_servers)
    try:
        raw = (
            f"From: Dealer Dan <{PARTY_A}>\r\nTo: {conversation.proxy_address}\r\n"
            "Subject: The Civic\r\nDate: Mon, 23 Nov 2026 10:20:00 +0000\r\n"
            "Message-ID: <civic-1@dealer.example.net>\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nStill available.\r\n"
        ).encode()
        inbound_server.send(raw, mail_from=PARTY_A, to=conversation.proxy_address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and worker.poll() is None:
            if Message.objects.filter(disposition=Disposition.SENT).exists():
                break
            time.sleep(0.1)
    finally:
        stop_worker(worker)
    inbound = InboundMessage.objects.get()
    assert Message.objects.filter(disposition=Disposition.SENT).exists(), (
        inbound.status,
        inbound.error,
        worker.stderr.read().decode()[-3000:],
    )
    [received] = mail_servers.mx.received
    assert received.rcpt_tos == [PARTY_B]
    assert from_domain(received.data) == "proxy.example"
    assert received.mail_from.endswith("@" + settings.BOUNCE_DOMAIN)
    assert dkim_signatures(received.data, dns) == [
        ("proxy.example", True),  # aligned with From: DMARC passes on it
        (settings.BOUNCE_DOMAIN, True),  # aligned with the envelope sender
    ]


@pytest.mark.django_db(transaction=True)
def test_forwarded_alias_mail_is_signed_by_the_alias_domain_it_is_from(
    inbound_server, link, mail_servers, settings
):
    """Alias mail goes From the writer's reverse address on the alias domain (here also the
    bounce domain), signed by it: aligned."""
    keys_signing(mail_servers.dns, settings.BOUNCE_DOMAIN)
    inbound_server.send(
        eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS), mail_from=CUSTOMER, to=ALIAS
    )
    work()  # the worker's turns: routed, then delivered
    [received] = mail_servers.mx.received
    assert received.rcpt_tos == ["sales@example.net"]
    assert from_domain(received.data) == ALIAS.rpartition("@")[2] == settings.BOUNCE_DOMAIN
    assert dkim_signatures(received.data, mail_servers.dns) == [(settings.BOUNCE_DOMAIN, True)]


@pytest.mark.django_db(transaction=True)
def test_mail_from_an_alias_domain_is_signed_by_it(alice, mail_servers, settings):
    """An API message From an address on one of our alias domains: aligned signature first."""
    from tests.factories import LinkFactory
    from tracking.services.directory import alias_domain_add
    from tracking.services.messages import message_accept

    alias_domain_add(domain="leads.iovox.test")
    keys_signing(mail_servers.dns, "leads.iovox.test", settings.BOUNCE_DOMAIN)
    link = LinkFactory(account=alice.account, node__account=alice.account)
    message_accept(
        account=alice.account, link=link, sender_address="desk@leads.iovox.test",
        sender_name="Desk", recipient_address="billy@example.net", recipient_name="Billy",
        subject="Hello", text_content="Plain", html_content="",
    )  # fmt: skip
    deliver_due()
    [received] = mail_servers.mx.received
    assert dkim_signatures(received.data, mail_servers.dns) == [
        ("leads.iovox.test", True),
        (settings.BOUNCE_DOMAIN, True),
    ]
