"""Delivery through an SMTP relay (DELIVERY_TRANSPORT=smtp) on loopback: an aiosmtpd
submission server that requires STARTTLS (its certificate verified against the CA file made for
it) and AUTH, and one without TLS; what it receives, its replies as dispositions, bad
configuration leaving messages queued."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.utils import timezone
from prometheus_client import REGISTRY

from conversations.domains import domains_check
from tests.factories import LinkFactory, MessageFactory
from tests.mailservers import SilentServer, SmtpRelay, dkim_signatures
from tests.worker import deliver_due, start_worker, stop_worker, wait_until
from tracking.delivery.compose import message_outgoing_bytes
from tracking.delivery.relay import relay_connections_close
from tracking.delivery.verp import verp_address
from tracking.models import Disposition, Message
from tracking.services.dkim_keys import dkim_key_add

pytestmark = pytest.mark.django_db

TRANSPORTS = ("mx", "smtp", "anymail")


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def no_kept_connection():
    """Each test opens its own relay connection (the kept one is per thread)."""
    relay_connections_close()
    yield
    relay_connections_close()


@pytest.fixture
def relay(settings, mail_servers):
    """A relay requiring STARTTLS and AUTH, the transport pointed at it."""
    server = SmtpRelay(starttls=True, logins={"iovox": "s3cret"}).start()
    settings.DELIVERY_TRANSPORT = "smtp"
    settings.SMTP_RELAY_HOST = "localhost"
    settings.SMTP_RELAY_PORT = server.port
    settings.SMTP_RELAY_SECURITY = "starttls"
    settings.SMTP_RELAY_USERNAME = "iovox"
    settings.SMTP_RELAY_PASSWORD = "s3cret"
    settings.SMTP_RELAY_CA_FILE = server.certificate
    yield server
    relay_connections_close()
    server.stop()


@pytest.fixture
def plain_relay(settings, mail_servers):
    """A relay on a trusted network: no TLS, no AUTH."""
    server = SmtpRelay(starttls=False).start()
    settings.DELIVERY_TRANSPORT = "smtp"
    settings.SMTP_RELAY_HOST = "127.0.0.1"
    settings.SMTP_RELAY_PORT = server.port
    settings.SMTP_RELAY_SECURITY = "none"
    settings.SMTP_RELAY_USERNAME = settings.SMTP_RELAY_PASSWORD = ""
    yield server
    relay_connections_close()
    server.stop()


def make_message(**fields) -> Message:
    recipient = fields.setdefault("recipient_address", "bob@example.net")
    fields.setdefault("recipient_domain", recipient.rpartition("@")[2])
    message = MessageFactory(**fields)
    message.smtp_message_id = f"<{message.message_id.hex}@iovox.email>"
    message.save(update_fields=["smtp_message_id"])
    return message


def comparable(data: bytes) -> bytes:
    """The message without what differs from one build to the next: its MIME boundaries
    (random) and so its DKIM signature (checked on its own)."""
    data = re.sub(rb"=_[0-9a-f]{32}", b"=_boundary", data)
    data = re.sub(rb"DKIM-Signature:.*?\r\n(?! )(?!\t)", b"", data, count=1, flags=re.S)
    return data.rstrip(b"\r\n")


def deliver(message: Message) -> Message:
    deliver_due()
    message.refresh_from_db()
    return message


def test_api_mail_goes_through_the_relay_over_verified_starttls_with_auth(
    alice, relay, mail_servers, settings
):
    key = dkim_key_add(domain=settings.BOUNCE_DOMAIN)
    mail_servers.dns.add(key.dns_name, "TXT", key.dns_txt_strings)
    domains_check(domains=[key.domain])
    LinkFactory(account=alice.account, node__account=alice.account, link_id="l1")
    body = {
        "link_id": "l1", "sender_address": "bob@brand.example", "sender_name": "Bob",
        "recipient_address": "billy@far.example", "recipient_name": "Billy",
        "subject": "Through the relay", "text_content": "Plain text",
        "html_content": '<p>HTML with <a href="https://shop.example/">a link</a></p>',
    }  # fmt: skip
    response = alice.client.post("/rest/v1/email", body, format="json")
    assert response.status_code == 201, response.json()
    with time_machine.travel(timezone.now(), tick=False):  # the same DKIM signature twice
        deliver_due()
        message = Message.objects.get(message_id=response.json()["message_id"])
        expected = message_outgoing_bytes(message)

    assert message.disposition == Disposition.SENT
    assert message.last_smtp_response.startswith("250 ")
    [received] = relay.received
    assert received.tls is True and relay.auth_attempts == ["iovox"]
    assert received.mail_from == verp_address(message)  # its DSNs come back to us
    assert received.rcpt_tos == ["billy@far.example"]  # no MX lookup: far.example has none
    assert comparable(received.data) == comparable(expected)  # what an MX would have got
    assert b"/t/o/" in received.data and b"/t/c/" in received.data  # our pixel, our links
    assert b"https://shop.example/" not in received.data  # the link goes through our click URL
    assert dkim_signatures(received.data, mail_servers.dns) == [(settings.BOUNCE_DOMAIN, True)]
    [attempt] = message.attempts.all()
    assert (attempt.mx_host, attempt.smtp_code, attempt.outcome) == ("localhost", 250, "sent")
    assert mail_servers.mx.received == []


def test_the_connection_is_kept_for_the_next_batch(relay):
    first, second = make_message(), make_message(recipient_address="amy@other.example")
    assert deliver(first).disposition == Disposition.SENT
    assert deliver(second).disposition == Disposition.SENT
    assert len({received.connection for received in relay.received}) == 1
    assert relay.auth_attempts == ["iovox"]


def test_wrong_credentials_leave_the_message_queued(relay, settings):
    settings.SMTP_RELAY_PASSWORD = "wrong"
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "refused our credentials: 535" in message.last_smtp_response
    assert message.next_attempt_at is not None and relay.received == []


def test_a_certificate_no_trusted_ca_signed_is_refused_unless_verification_is_off(relay, settings):
    settings.SMTP_RELAY_CA_FILE = ""  # the system's CAs do not know the relay's
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "failed verification" in message.last_smtp_response
    assert relay.received == [] and relay.auth_attempts == []

    settings.SMTP_RELAY_VERIFY = False
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        assert deliver(message).disposition == Disposition.SENT


def test_a_relay_without_starttls_is_refused_when_starttls_is_required(plain_relay, settings):
    settings.SMTP_RELAY_SECURITY = "starttls"
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "does not offer STARTTLS" in message.last_smtp_response
    assert plain_relay.received == []


def test_implicit_tls_on_port_465_with_auth(settings, mail_servers):
    server = SmtpRelay(starttls=False, implicit_tls=True, logins={"iovox": "s3cret"}).start()
    try:
        settings.DELIVERY_TRANSPORT = "smtp"
        settings.SMTP_RELAY_HOST, settings.SMTP_RELAY_PORT = "localhost", server.port
        settings.SMTP_RELAY_SECURITY = "tls"
        settings.SMTP_RELAY_USERNAME, settings.SMTP_RELAY_PASSWORD = "iovox", "s3cret"
        settings.SMTP_RELAY_CA_FILE = server.certificate
        message = deliver(make_message())
    finally:
        relay_connections_close()
        server.stop()
    assert message.disposition == Disposition.SENT
    assert server.received[0].tls is True and server.auth_attempts == ["iovox"]


def test_a_plain_relay_takes_mail_without_tls(plain_relay):
    message = deliver(make_message())
    assert message.disposition == Disposition.SENT
    [received] = plain_relay.received
    assert received.tls is False and received.mail_from == verp_address(message)


def test_pipelined_when_the_relay_offers_it(plain_relay):
    plain_relay.pipelining = True
    messages = [make_message(recipient_address=f"r{i}@example.net") for i in range(3)]
    deliver_due()
    assert {m.disposition for m in Message.objects.filter(pk__in=[m.pk for m in messages])} == {
        Disposition.SENT
    }
    assert len(plain_relay.received) == 3


def test_4xx_queues_on_the_retry_schedule_then_the_retry_succeeds(plain_relay, settings):
    settings.EMAIL_RETRY_SCHEDULE = [60, 300]
    plain_relay.reply_to_rcpt["busy@example.net"] = "451 4.3.0 Try again later"
    start = timezone.now()
    message = deliver(make_message(recipient_address="busy@example.net"))
    assert message.disposition == Disposition.QUEUED
    assert timedelta(seconds=59) < message.next_attempt_at - start < timedelta(seconds=65)
    del plain_relay.reply_to_rcpt["busy@example.net"]
    with time_machine.travel(start + timedelta(seconds=61)):
        assert deliver(message).disposition == Disposition.SENT
    assert [a.outcome for a in message.attempts.all()] == ["queued", "sent"]


def test_5xx_makes_the_message_undeliverable(plain_relay):
    plain_relay.reply_to_rcpt["gone@example.net"] = "550 5.1.1 No such user"
    message = deliver(make_message(recipient_address="gone@example.net"))
    assert message.disposition == Disposition.UNDELIVERABLE
    assert message.last_smtp_response == "550 5.1.1 No such user"
    assert message.attempts.get().smtp_code == 550


def test_5xx_at_data_makes_the_message_undeliverable(plain_relay):
    plain_relay.reply_to_data = "554 5.7.1 Rejected as spam"
    assert deliver(make_message()).disposition == Disposition.UNDELIVERABLE


def test_an_unreachable_relay_leaves_the_message_queued(plain_relay, settings):
    closed = SilentServer().start()
    closed.stop()  # the port was free a moment ago; nothing listens on it now
    settings.SMTP_RELAY_PORT = closed.port
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "refused" in message.last_smtp_response


def test_an_account_on_the_relay_while_the_rest_go_straight_to_the_mx(
    plain_relay, mail_servers, settings
):
    settings.DELIVERY_TRANSPORT = "mx"
    sent_by = {t: sample("iovox_deliveries_total", outcome="sent", transport=t) for t in TRANSPORTS}
    on_relay = make_message(recipient_address="a@example.net")
    on_relay.account.delivery_transport = "smtp"
    on_relay.account.save(update_fields=["delivery_transport"])
    direct = make_message(recipient_address="b@example.net")
    deliver_due()
    assert plain_relay.recipients() == ["a@example.net"]
    assert mail_servers.mx.recipients() == ["b@example.net"]
    assert {m.disposition for m in Message.objects.filter(pk__in=[on_relay.pk, direct.pk])} == {
        Disposition.SENT
    }
    # the outcome's metric names the transport that delivered it, the account's override too
    assert {
        t: sample("iovox_deliveries_total", outcome="sent", transport=t) - sent_by[t]
        for t in TRANSPORTS
    } == {"mx": 1, "smtp": 1, "anymail": 0}


def test_a_relay_without_a_host_is_a_check_error_and_mail_stays_queued(mail_servers, settings):
    settings.DELIVERY_TRANSPORT = "smtp"
    settings.SMTP_RELAY_HOST = ""
    with pytest.raises(SystemCheckError, match="tracking.E010"):
        call_command("check")
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "SMTP_RELAY_HOST" in message.last_smtp_response
    assert mail_servers.mx.received == []


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"DELIVERY_TRANSPORT": "pigeon"}, "unknown delivery transport"),
        ({"SMTP_RELAY_HOST": "relay.test", "SMTP_RELAY_SECURITY": "ssl"}, "SMTP_RELAY_SECURITY"),
        ({"SMTP_RELAY_HOST": "relay.test", "SMTP_RELAY_USERNAME": "u"}, "go together"),
    ],
)
def test_bad_relay_settings_fail_the_check(settings, overrides, error):
    for name, value in overrides.items():
        setattr(settings, name, value)
    with pytest.raises(SystemCheckError, match=error):
        call_command("check")


@pytest.mark.django_db(transaction=True)
def test_the_real_worker_delivers_through_the_relay(alice, mail_servers):
    server = SmtpRelay(starttls=True, logins={"iovox": "s3cret"}).start()
    server.reply_to_rcpt["gone@far.example"] = "550 5.1.1 No such user"
    LinkFactory(account=alice.account, node__account=alice.account, link_id="l1")
    worker = start_worker(
        mail_servers,
        DELIVERY_TRANSPORT="smtp",
        SMTP_RELAY_HOST="localhost",
        SMTP_RELAY_PORT=str(server.port),
        SMTP_RELAY_USERNAME="iovox",
        SMTP_RELAY_PASSWORD="s3cret",
        SMTP_RELAY_CA_FILE=server.certificate,
    )
    try:
        ids = []
        for recipient in ("billy@far.example", "gone@far.example"):
            body = {
                "link_id": "l1", "sender_address": "bob@brand.example", "sender_name": "Bob",
                "recipient_address": recipient, "recipient_name": "R", "subject": "Hi",
                "text_content": "plain", "html_content": "<p>html</p>",
            }  # fmt: skip
            response = alice.client.post("/rest/v1/email", body, format="json")
            assert response.status_code == 201
            ids.append(response.json()["message_id"])
        wait_until(
            lambda: (
                Message.objects.filter(
                    message_id__in=ids, disposition__in=["sent", "undeliverable"]
                ).count()
                == 2
            ),
            timeout=30,
        )
    finally:
        log = stop_worker(worker)
        server.stop()
    dispositions = dict(Message.objects.values_list("recipient_address", "disposition"))
    assert dispositions == {
        "billy@far.example": Disposition.SENT,
        "gone@far.example": Disposition.UNDELIVERABLE,
    }, log
    assert server.recipients() == ["billy@far.example"] and mail_servers.mx.received == []
    assert server.received[0].tls is True


@pytest.mark.django_db(transaction=True)
def test_the_worker_refuses_to_start_with_a_relay_it_cannot_use(mail_servers):
    worker = start_worker(mail_servers, DELIVERY_TRANSPORT="smtp", SMTP_RELAY_HOST="")
    try:
        worker.wait(timeout=60)
    finally:
        log = stop_worker(worker)
    assert worker.returncode != 0
    assert "tracking.E010" in log and "SMTP_RELAY_HOST" in log


def test_support_sets_an_accounts_transport_in_admin(admin_client, alice):
    response = admin_client.post(
        f"/admin/tracking/account/{alice.account.pk}/change/",
        {
            "name": alice.account.name,
            "created_at_0": "2026-01-01",
            "created_at_1": "00:00:00",
            "delivery_transport": "smtp",
            "portal_notice": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    alice.account.refresh_from_db()
    assert alice.account.delivery_transport == "smtp"
    listing = admin_client.get("/admin/tracking/account/?delivery_transport=smtp")
    assert alice.account.name in listing.content.decode()


def test_a_later_bounce_from_the_relay_comes_back_to_our_verp_address(plain_relay):
    """The relay took it (250); the recipient's server refused it later, and the relay's DSN
    goes to the envelope sender it was given: ours."""
    from tests.tracking.test_bounces import fixture
    from tracking.services.bounces import bounce_process

    message = deliver(make_message())
    assert message.disposition == Disposition.SENT
    [received] = plain_relay.received
    assert bounce_process(raw=fixture("postfix_dsn.eml", message), rcpt_to=received.mail_from)
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    assert [a.outcome for a in message.attempts.all()] == ["sent", "received_bounced"]
