"""Inbound mail through the real processes: `manage.py smtpd` stores it, and the resident
routing loop of a real `manage.py qcluster` (tracking/worker.py) routes it, with no wake-up
from the server, and its delivery loop forwards it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conversations.models import InboundMessage
from tests.conversations.conftest import InboundServer, eml
from tests.factories import ContactFactory, LinkFactory
from tests.mailservers import free_port
from tests.worker import ROOT, database_url, start_worker, stop_worker, wait_until
from tracking.models import Message

ALIAS = "loop_test@iovox.email"


@pytest.fixture
def smtpd(transactional_db):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "manage.py", "smtpd", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "listening" in process.stdout.readline()
        yield InboundServer("127.0.0.1", port)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_mail_the_real_server_stores_is_routed_and_forwarded_by_the_real_worker(
    smtpd, mail_servers
):
    LinkFactory(email_address=ALIAS, destination=ContactFactory(email="sales@example.net"))
    worker = start_worker(mail_servers)
    try:
        for n in range(3):
            raw = eml("gmail_reply.eml", sender="customer@gmail.example", to=ALIAS)
            raw = raw.replace(b"Subject: Re: Your test drive", b"Subject: number %d" % n)
            smtpd.send(raw, mail_from="customer@gmail.example", to=ALIAS)
        wait_until(lambda: Message.objects.filter(disposition="sent").count() == 3, timeout=30)
    finally:
        log = stop_worker(worker)
    routed = InboundMessage.objects.filter(status=InboundMessage.Status.ROUTED)
    assert routed.count() == 3, log
    assert mail_servers.mx.recipients() == ["sales@example.net"] * 3
