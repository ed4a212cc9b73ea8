"""A real inbound SMTP server on a loopback port (port 0), and the mail fixtures."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.db import connections

from conversations.domains import domains_check
from conversations.inbound.smtp import serve
from conversations.models import Conversation
from conversations.services import conversation_open, proxy_domain_add
from tests.factories import ContactFactory, LinkFactory, NodeFactory
from tracking.models import DkimKey
from tracking.services.dkim_keys import dkim_key_ensure

ALIAS = "bobs-automotive_honda-civic@iovox.email"
CUSTOMER = "customer@gmail.example"
PARTY_A = "dealer@dealer.example.net"
PARTY_B = "billy@example.net"

MAIL_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def eml(name: str, *, sender: str = "", to: str = "") -> bytes:
    """A fixture message with %FROM% and %TO% filled in, in CRLF line endings."""
    raw = (MAIL_FIXTURES / name).read_bytes()
    raw = raw.replace(b"%FROM%", sender.encode()).replace(b"%TO%", to.encode())
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def keys_signing(dns, *domains: str) -> None:
    """Each domain's key (made when it was added, or now) published and seen by a check."""
    for domain in domains:
        dkim_key_ensure(domain=domain)
        for key in DkimKey.objects.filter(domain=domain, status=DkimKey.Status.PENDING):
            dns.add(key.dns_name, "TXT", key.dns_txt_strings)
    domains_check(domains=domains)
    active = DkimKey.objects.filter(domain__in=domains, status=DkimKey.Status.ACTIVE)
    assert active.count() == len(domains)


@dataclass
class InboundServer:
    host: str
    port: int

    def client(self, source: str = "127.0.0.1") -> smtplib.SMTP:
        """A client connected from `source` (another loopback address is another client)."""
        return smtplib.SMTP(self.host, self.port, timeout=10, source_address=(source, 0))

    def send(
        self, raw: bytes, *, mail_from: str, to: list[str] | str, source: str = "127.0.0.1"
    ) -> dict:
        """Send one message; the refused recipients, as smtplib reports them."""
        with self.client(source) as smtp:
            return smtp.sendmail(mail_from, [to] if isinstance(to, str) else to, raw)


class WorkedServer(InboundServer):
    """Our server, with the worker's loops taking their turns once each message is stored
    (tests/worker.py): routed, and delivered, before `send` returns."""

    def send(self, raw: bytes, *, mail_from: str, to: list[str] | str) -> dict:
        from tests.worker import work

        refused = super().send(raw, mail_from=mail_from, to=to)
        work()
        return refused


@pytest.fixture
def inbound_server(transactional_db, settings, dns_server):
    """`manage.py smtpd`'s server, in a thread of this process, on an ephemeral port; senders
    are authenticated against the loopback DNS server (names it does not know: NXDOMAIN)."""
    settings.DNS_NAMESERVERS = [dns_server.nameserver]
    settings.DNS_TIMEOUT = 0.5
    # Each database job of the server's threads closes its connection, so none outlives the
    # test (PostgreSQL will not drop a test database that is still in use).
    connections.settings["default"]["CONN_MAX_AGE"] = 0
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    bound: list[int] = []
    started = threading.Event()

    def ready(port: int) -> None:
        bound.append(port)
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serve("127.0.0.1", 0, ready=ready, stop=stop))

    thread = threading.Thread(target=run, name="inbound-smtpd", daemon=True)
    thread.start()
    assert started.wait(10), "the inbound SMTP server did not start"
    yield InboundServer("127.0.0.1", bound[0])
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


@pytest.fixture
def link(transactional_db):
    """A link with an alias whose mail goes to the "Sales desk" contact."""
    contact = ContactFactory(name="Sales desk", email="sales@example.net")
    return LinkFactory(
        node=NodeFactory(account=contact.account, node_name="Bobs automotive"),
        link_name="Honda Civic",
        email_address=ALIAS,
        destination=contact,
    )


@pytest.fixture
def conversation(link) -> Conversation:
    """Party A (the dealer) and party B (Billy) talking through a proxy.example address."""
    proxy_domain_add(domain="proxy.example")
    return conversation_open(
        account=link.account,
        link=link,
        proxy_domain="proxy.example",
        party_a_address=PARTY_A,
        party_a_name="Dealer Dan",
        party_b_address=PARTY_B,
        party_b_name="Billy Bob",
        proxy_name="Bobs automotive",
    )
