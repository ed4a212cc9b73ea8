"""The inbound SMTP server's limits, spoken to with smtplib and raw sockets from two loopback
addresses (127.0.0.1 and 127.0.0.2 are two clients): connections, messages a minute, bytes a
day, and a large message stored whole."""

from __future__ import annotations

import os
import random
import smtplib
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conversations.inbound.limits import client_of, usage_purge
from conversations.models import InboundMessage, InboundUsage
from tests.factories import LinkFactory, MessageFactory
from tests.mailservers import free_port
from tests.worker import database_url
from tracking.delivery.verp import verp_address

ROOT = Path(__file__).resolve().parents[2]
ALIAS = "bobs-automotive_honda-civic@iovox.email"
OTHER_ALIAS = "bobs-automotive_jazz@iovox.email"
START = 1_800_000_000  # a whole day (and minute) in Unix time: the tests' clock starts there


@pytest.fixture
def aliases(transactional_db):
    link = LinkFactory(email_address=ALIAS)
    LinkFactory(node=link.node, email_address=OTHER_ALIAS)
    return link


@pytest.fixture
def clock(monkeypatch):
    """The limits' clock, set by the test: `clock.now` seconds of Unix time."""

    class Clock:
        now = START + 10.0

    monkeypatch.setattr("conversations.inbound.limits.now", lambda: Clock.now)
    return Clock


def message(size: int, n: int = 0) -> bytes:
    """A message of exactly `size` bytes."""
    head = b"Subject: message %d\r\nMessage-ID: <m%d@example.net>\r\n\r\n" % (n, n)
    full, rest = divmod(size - len(head) - 2, 80)  # then a last line of `rest` x's
    return head + (b"x" * 78 + b"\r\n") * full + b"x" * rest + b"\r\n"


def greeting(server, source: str) -> tuple[socket.socket, bytes]:
    """The first line the server says to a raw connection from `source`, which stays open."""
    sock = socket.create_connection(
        (server.host, server.port), timeout=10, source_address=(source, 0)
    )
    return sock, sock.makefile("rb").readline()


# --- Connections --------------------------------------------------------------------------


def test_connections_past_the_limit_from_one_client_get_421_while_another_gets_in(
    inbound_server, aliases, settings
):
    settings.SMTPD_MAX_CONNECTIONS_PER_CLIENT = 2
    first, second = inbound_server.client("127.0.0.1"), inbound_server.client("127.0.0.1")
    try:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            inbound_server.client("127.0.0.1")
        assert refused.value.smtp_code == 421
        assert refused.value.smtp_error.startswith(b"4.7.0")
        # Another client still gets in, and its mail is taken.
        assert (
            inbound_server.send(message(500), mail_from="a@b.example", to=ALIAS, source="127.0.0.2")
            == {}
        )
        # The two connections of the first client still work.
        assert first.sendmail("a@b.example", [ALIAS], message(500, 1)) == {}
    finally:
        first.quit()
        second.quit()
    assert InboundMessage.objects.count() == 2


def test_a_refused_connection_is_closed_after_its_421(inbound_server, aliases, settings):
    settings.SMTPD_MAX_CONNECTIONS_PER_CLIENT = 1
    kept, line = greeting(inbound_server, "127.0.0.1")
    try:
        assert line.startswith(b"220 ")
        refused, line = greeting(inbound_server, "127.0.0.1")
        assert line == b"421 4.7.0 Too many connections from your address, try again later\r\n"
        assert refused.recv(100) == b""  # closed by the server
        refused.close()
    finally:
        kept.close()


def test_a_connection_that_ends_frees_its_place(inbound_server, aliases, settings):
    settings.SMTPD_MAX_CONNECTIONS_PER_CLIENT = 1
    inbound_server.client("127.0.0.1").quit()
    # The server counts the connection closed once it sees it go: wait for that (bounded).
    deadline = time.monotonic() + 10
    while True:
        try:
            inbound_server.client("127.0.0.1").quit()
            break
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline, "the first connection's place was never freed"
            time.sleep(0.01)


def test_connections_past_the_total_limit_get_421_4_3_2(inbound_server, aliases, settings):
    settings.SMTPD_MAX_CONNECTIONS = 2
    first, second = inbound_server.client("127.0.0.1"), inbound_server.client("127.0.0.2")
    try:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            inbound_server.client("127.0.0.3")
        assert refused.value.smtp_code == 421
        assert refused.value.smtp_error.startswith(b"4.3.2")
    finally:
        first.quit()
        second.quit()


def test_ipv6_clients_are_counted_by_their_64():
    assert client_of("2001:db8:1:2:aaaa::1") == client_of("2001:db8:1:2:bbbb::2")
    assert client_of("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_of("2001:db8:1:3::1") != client_of("2001:db8:1:2::1")
    assert client_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_of("192.0.2.7") == "192.0.2.7"


# --- Messages a minute from one client ----------------------------------------------------


def test_messages_past_the_limit_a_minute_get_451_at_mail_from_and_another_client_sends(
    inbound_server, aliases, settings, clock
):
    settings.SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE = 3
    for n in range(3):
        assert inbound_server.send(message(500, n), mail_from="a@b.example", to=ALIAS) == {}
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        inbound_server.send(message(500, 3), mail_from="a@b.example", to=ALIAS)
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.7.1")
    assert (
        inbound_server.send(message(500, 4), mail_from="c@d.example", to=ALIAS, source="127.0.0.2")
        == {}
    )
    assert InboundMessage.objects.count() == 4

    clock.now += 60  # the next minute
    assert inbound_server.send(message(500, 5), mail_from="a@b.example", to=ALIAS) == {}


def test_the_store_decides_with_what_other_processes_counted(
    inbound_server, aliases, settings, clock
):
    """This process has not seen the client yet, another one has counted its messages: the
    store refuses the message at DATA, and from then on this process refuses at MAIL FROM."""
    settings.SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE = 3
    InboundUsage.objects.create(key="client:127.0.0.1", window_start=START, amount=3)
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        assert smtp.mail("a@b.example")[0] == 250
        assert smtp.rcpt(ALIAS)[0] == 250
        code, text = smtp.data(message(500))
        assert (code, text[:5]) == (451, b"4.7.1")
        assert smtp.mail("a@b.example")[0] == 451
    assert not InboundMessage.objects.exists()
    assert InboundUsage.objects.get(key="client:127.0.0.1").amount == 3  # nothing counted


# --- Bytes a day to one recipient ---------------------------------------------------------


def test_the_daily_quota_of_an_alias_defers_what_does_not_fit(
    inbound_server, aliases, settings, clock
):
    settings.SMTPD_DAILY_BYTES_PER_RECIPIENT = 10_000
    assert inbound_server.send(message(4000, 1), mail_from="a@b.example", to=ALIAS) == {}
    assert inbound_server.send(message(4000, 2), mail_from="a@b.example", to=ALIAS) == {}
    # 8,000 used: a message of 4,000 bytes (its SIZE declared at MAIL FROM) is refused at RCPT.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        inbound_server.send(message(4000, 3), mail_from="a@b.example", to=ALIAS)
    code, text = refused.value.recipients[ALIAS]
    assert (code, text[:5]) == (452, b"4.2.2")
    # Without a declared SIZE it is refused once its size is known, after DATA.
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("a@b.example")
        assert smtp.rcpt(ALIAS)[0] == 250
        code, text = smtp.data(message(4000, 4))
        assert (code, text[:5]) == (452, b"4.2.2")
    # What still fits, fits; another alias has its own quota.
    assert inbound_server.send(message(2000, 5), mail_from="a@b.example", to=ALIAS) == {}
    assert inbound_server.send(message(4000, 6), mail_from="a@b.example", to=OTHER_ALIAS) == {}
    assert InboundUsage.objects.get(key=f"recipient:{ALIAS}").amount == 10_000
    assert InboundMessage.objects.count() == 4

    clock.now += 86400  # the next day (UTC)
    assert inbound_server.send(message(4000, 7), mail_from="a@b.example", to=ALIAS) == {}


def test_a_message_larger_than_the_whole_daily_quota_is_refused_for_good(
    inbound_server, aliases, settings, clock
):
    settings.SMTPD_DAILY_BYTES_PER_RECIPIENT = 10_000
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        inbound_server.send(message(12_000), mail_from="a@b.example", to=ALIAS)  # SIZE declared
    code, text = refused.value.recipients[ALIAS]
    assert (code, text[:5]) == (552, b"5.2.3")
    with inbound_server.client() as smtp:
        smtp.ehlo("client.example")
        smtp.mail("a@b.example")
        assert smtp.rcpt(ALIAS)[0] == 250
        code, text = smtp.data(message(12_000))
        assert (code, text[:5]) == (552, b"5.2.3")
    assert not InboundMessage.objects.exists()


def test_concurrent_messages_to_an_alias_are_stored_only_as_far_as_its_quota_goes(
    inbound_server, aliases, settings, clock
):
    """The issue's four concurrent messages to a public alias, each past RCPT TO before any
    was stored: as many are stored as fit the quota, the others get 452."""
    settings.SMTPD_DAILY_BYTES_PER_RECIPIENT = 10_000
    everyone_past_rcpt = threading.Barrier(4, timeout=10)

    def send(n: int) -> int:
        with inbound_server.client() as smtp:
            smtp.ehlo("client.example")
            smtp.mail("a@b.example")
            assert smtp.rcpt(ALIAS)[0] == 250
            everyone_past_rcpt.wait()
            return smtp.data(message(4000, n))[0]

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = sorted(pool.map(send, range(4)))
    assert codes == [250, 250, 452, 452]
    assert InboundMessage.objects.count() == 2
    assert InboundUsage.objects.get(key=f"recipient:{ALIAS}").amount == 8000


def test_the_daily_quota_is_shared_by_every_smtpd_process(inbound_server, aliases, settings):
    settings.SMTPD_DAILY_BYTES_PER_RECIPIENT = 10_000
    other = SmtpdProcess(SMTPD_DAILY_BYTES_PER_RECIPIENT="10000")
    try:
        assert inbound_server.send(message(4000, 1), mail_from="a@b.example", to=ALIAS) == {}
        assert other.send(message(4000, 2), mail_from="a@b.example", to=ALIAS) == {}
        # This process saw 4,000 used and lets RCPT through; its store sees 8,000.
        with pytest.raises(smtplib.SMTPDataError) as refused:
            inbound_server.send(message(4000, 3), mail_from="a@b.example", to=ALIAS)
        assert refused.value.smtp_code == 452
        assert other.send(message(2000, 4), mail_from="a@b.example", to=ALIAS) == {}
    finally:
        other.stop()
    assert InboundUsage.objects.get(key=f"recipient:{ALIAS}").amount == 10_000
    assert InboundMessage.objects.count() == 3


def test_bounce_addresses_have_no_daily_quota(inbound_server, aliases, settings, clock):
    settings.SMTPD_DAILY_BYTES_PER_RECIPIENT = 1000
    bounce_to = verp_address(MessageFactory(link=aliases))
    assert inbound_server.send(message(4000), mail_from="", to=bounce_to) == {}
    assert not InboundUsage.objects.filter(key__startswith="recipient:").exists()


def test_old_usage_is_purged(transactional_db, clock):
    InboundUsage.objects.create(key="client:192.0.2.1", window_start=START - 2 * 86400, amount=9)
    InboundUsage.objects.create(key="recipient:a@b.example", window_start=START, amount=9)
    assert usage_purge() == 1
    assert list(InboundUsage.objects.values_list("key", flat=True)) == ["recipient:a@b.example"]


# --- A large message ----------------------------------------------------------------------


def test_a_20_mb_message_is_stored_byte_for_byte(inbound_server, aliases):
    rng = random.Random(20)
    # Every byte value but CR and LF, in lines of 900: NUL and 8-bit bytes included.
    alphabet = bytes(b for b in range(256) if b not in b"\r\n")
    lines = [bytes(rng.choices(alphabet, k=900)) + b"\r\n" for _ in range(64)]
    body = b"".join(lines[n % 64] for n in range(20 * 1024 * 1024 // 902))
    raw = b"Subject: big\r\nMessage-ID: <big@example.net>\r\n\r\n" + body + b".\r\n..\r\n"
    assert inbound_server.send(raw, mail_from="a@b.example", to=ALIAS) == {}
    stored = bytes(InboundMessage.objects.get().raw)
    assert stored.startswith(b"Received: from ")
    assert stored.endswith(raw)
    assert len(stored) - len(raw) < 500  # our Received line, and nothing else


class SmtpdProcess:
    """`manage.py smtpd` in a process of its own, on the test database."""

    def __init__(self, **env: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "smtpd", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "WARNING", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert "listening" in self.process.stdout.readline()

    def send(self, raw: bytes, *, mail_from: str, to: str) -> dict:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
            return smtp.sendmail(mail_from, [to], raw)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
