"""Shared fixtures: named actors (alice owns things, bob is another account) and API clients
that authenticate with the `username` and `secureKey` headers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from tests.factories import AccountFactory, ApiCredentialFactory
from tests.mailservers import DnsServer, SmtpSink
from tests.webhook_receivers import Receiver
from tracking.models import Account, ApiCredential


@dataclass
class Actor:
    account: Account
    credential: ApiCredential
    secure_key: str
    client: APIClient

    @property
    def headers(self) -> dict[str, str]:
        return {"username": self.credential.username, "secureKey": self.secure_key}


def make_actor(name: str) -> Actor:
    account = AccountFactory(name=name)
    key = f"{name}-secure-key-0123456789abcdef0123456789"
    credential = ApiCredentialFactory(account=account, username=name, secure_key=key)
    client = APIClient()
    client.credentials(HTTP_USERNAME=name, HTTP_SECUREKEY=key)
    return Actor(account=account, credential=credential, secure_key=key, client=client)


@pytest.fixture
def alice(db) -> Actor:
    return make_actor("alice")


@pytest.fixture
def bob(db) -> Actor:
    return make_actor("bob")


# --- Mail infrastructure on loopback (tests/mailservers.py) ---------------------------------


@dataclass
class MailServers:
    dns: DnsServer
    mx: SmtpSink


@pytest.fixture
def dns_server():
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def mx_server():
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def mail_servers(settings, dns_server, mx_server) -> MailServers:
    """Delivery pointed at the local DNS server and SMTP sink; example.net routes to the sink."""
    settings.DNS_NAMESERVERS = [dns_server.nameserver]
    settings.DNS_TIMEOUT = 0.5
    settings.SMTP_DELIVERY_PORT = mx_server.port
    settings.SMTP_TIMEOUT = 1.0
    dns_server.route("example.net")
    return MailServers(dns=dns_server, mx=mx_server)


@pytest.fixture(autouse=True)
def process_caches_start_empty():
    """Each test starts with nothing cached from another test's (rolled back) rows, and no
    failed authentications counted (Django's cache)."""
    from django.core.cache import cache as django_cache

    from tracking.delivery.dkim import dkim_key_cache
    from tracking.events import subscriptions
    from tracking.services.accounts import credential_cache
    from tracking.services.directory import link_cache

    for cache in (credential_cache, link_cache, dkim_key_cache, subscriptions):
        cache.clear()
    django_cache.clear()


@pytest.fixture(autouse=True)
def hits_written_at_once(settings):
    """Tracking hits are written within their request in tests. The web default batches them
    for later (tracking/buffering.py), possibly from a timer thread whose own connection could
    not see a test's uncommitted rows."""
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 0


# --- Webhook receivers on loopback (tests/webhook_receivers.py) -----------------------------


def _receiver(behaviour: str):
    receiver = Receiver(behaviour).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver():
    """Answers 200."""
    yield from _receiver("ok")


@pytest.fixture
def flaky_receiver():
    """Answers 500 to an event's first post, 200 to the next."""
    yield from _receiver("flaky")


@pytest.fixture
def hanging_receiver():
    """Never answers."""
    yield from _receiver("hang")
