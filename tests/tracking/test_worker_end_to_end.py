"""The real worker: `manage.py qcluster` in a subprocess, on the test database, delivering to
the loopback DNS server and SMTP sink."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.factories import LinkFactory
from tracking.models import Disposition, Message

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(mail_servers) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DNS_NAMESERVERS": mail_servers.dns.nameserver,
        "SMTP_DELIVERY_PORT": str(mail_servers.mx.port),
        "Q_WORKERS": "1",
        "LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the whole process group (the cluster's own stop can take
    longer than this test should: it waits out its guard cycle)."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=5)


@pytest.mark.django_db(transaction=True)
def test_a_message_sent_through_the_api_is_delivered_by_the_real_worker(alice, mail_servers):
    LinkFactory(account=alice.account, node__account=alice.account, link_id="1234")
    worker = start_worker(mail_servers)
    try:
        response = alice.client.post(
            "/rest/v1/email",
            {
                "link_id": 1234, "sender_address": "bob.bob@iovox.com", "sender_name": "Bob Bob",
                "recipient_address": "bob@example.net", "recipient_name": "Billy Bob",
                "subject": "Hello", "text_content": "plain", "html_content": "<p>html</p>",
            },
            format="json",
        )  # fmt: skip
        assert response.status_code == 201
        message_id = response.json()["message_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker.poll() is None:
            if Message.objects.filter(message_id=message_id, disposition="sent").exists():
                break
            time.sleep(0.1)
    finally:
        stop_worker(worker)
    message = Message.objects.get(message_id=message_id)
    assert message.disposition == Disposition.SENT, worker.stderr.read().decode()[-3000:]
    assert mail_servers.mx.recipients() == ["bob@example.net"]
    detail = alice.client.get(f"/rest/v1/email/{message_id}").json()
    assert detail["disposition"] == "sent" and detail["attempts"][0]["smtp_code"] == 250


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_delivery_leaves_a_claim_the_sweep_delivers_once(
    alice, mail_servers, sync_tasks, settings
):
    from datetime import timedelta

    import time_machine
    from django_q.conf import Conf

    from tracking import tasks
    from tracking.services.messages import message_accept

    link = LinkFactory(account=alice.account, node__account=alice.account)
    mail_servers.mx.rcpt_delay = 30  # the worker will hang waiting for RCPT's reply
    worker = start_worker(mail_servers)
    try:
        Conf.SYNC = False  # this message's task goes to the real worker; the sweep's run here
        message = message_accept(
            account=alice.account, link=link, sender_address="a@sender.example",
            sender_name="A", recipient_address="bob@example.net", recipient_name="B",
            subject="s", text_content="t", html_content="<p>h</p>",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not mail_servers.mx.rcpt_seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mail_servers.mx.rcpt_seen == ["bob@example.net"]
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)  # killed mid-delivery: no goodbye
            worker.wait(timeout=5)
        Conf.SYNC = True
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED
    assert message.attempt_count == 1 and message.locked_until is not None

    mail_servers.mx.rcpt_delay = 0
    assert tasks.sweep_due_messages() == 0  # the claim is still live
    with time_machine.travel(message.locked_until + timedelta(seconds=1)):
        assert tasks.sweep_due_messages() == 1
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT and message.attempt_count == 2
    assert mail_servers.mx.recipients() == ["bob@example.net"]  # once
