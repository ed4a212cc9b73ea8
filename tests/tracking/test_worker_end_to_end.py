"""The real worker: `manage.py qcluster` in a subprocess on the test database, its resident
delivery loop (tracking/worker.py) delivering to the loopback DNS server and SMTP sink. Times
are asserted within generous bounds, by polling the database until a deadline."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule

from tests.factories import LinkFactory
from tests.mailservers import SilentServer
from tests.worker import start_worker, stop_worker, wait_until
from tracking import worker as worker_module
from tracking.models import DeliveryAttempt, Disposition, Link, Message, WorkerLease
from tracking.services.messages import MessageDraft, messages_accept

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def link(alice) -> Link:
    return LinkFactory(account=alice.account, node__account=alice.account, link_id="1234")


def accept(link: Link, recipients: list[str]) -> list[Message]:
    """Accept messages as the API does (one INSERT): `received`, nothing enqueued."""
    return messages_accept(
        [
            MessageDraft(
                account=link.account,
                link=link,
                sender_address="a@sender.example",
                sender_name="A",
                recipient_address=recipient,
                recipient_name="R",
                subject="s",
                text_content="t",
                html_content="<p>h</p>",
            )  # fmt: skip
            for recipient in recipients
        ]
    )


def count(**filters) -> int:
    return Message.objects.filter(**filters).count()


def test_a_message_sent_through_the_api_is_delivered_by_the_real_worker(alice, link, mail_servers):
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
        wait_until(lambda: count(message_id=message_id, disposition="sent") == 1, timeout=30)
    finally:
        log = stop_worker(worker)
    assert Message.objects.get(message_id=message_id).disposition == Disposition.SENT, log
    assert mail_servers.mx.recipients() == ["bob@example.net"]
    detail = alice.client.get(f"/rest/v1/email/{message_id}").json()
    assert detail["disposition"] == "sent" and detail["attempts"][0]["smtp_code"] == 250


def test_a_backlog_of_many_batches_to_one_domain_drains_with_no_schedule(link, mail_servers):
    """Accepted while the worker was stopped, more than twenty batches to one domain: the
    loop, started with the cluster, delivers them all; no schedule (they are removed) and no
    other task is needed."""
    Schedule.objects.all().delete()
    messages = accept(link, [f"r{i}@example.net" for i in range(5 * 21 + 3)])
    worker = start_worker(mail_servers, DELIVERY_BATCH_SIZE="5")
    try:
        wait_until(lambda: count(disposition="sent") == len(messages), timeout=60)
    finally:
        log = stop_worker(worker)
    assert count(disposition="sent") == len(messages), log
    assert sorted(mail_servers.mx.recipients()) == sorted(m.recipient_address for m in messages)


LOOPS = ["delivery/0", "routing/0"]


def test_retries_and_expiry_come_on_time_with_a_one_second_schedule(link, mail_servers):
    """EMAIL_RETRY_SCHEDULE=1,1,1,2 and EMAIL_EXPIRY=8: a message answered 451 twice is sent
    at its third attempt, each retry within 2 s of its due time; a message whose MX never
    answers (each attempt a 2-second timeout) expires at its deadline."""
    mail_servers.mx.reply_to_rcpt["busy@example.net"] = ["451 4.3.0 Later", "451 4.3.0 Later"]
    silent = SilentServer("127.0.0.6", mail_servers.mx.port).start()
    mail_servers.dns.route("silent.example", "127.0.0.6")
    worker = start_worker(
        mail_servers, EMAIL_RETRY_SCHEDULE="1,1,1,2", EMAIL_EXPIRY="8", SMTP_TIMEOUT="2"
    )
    try:
        # The delivery loop and the routing loop run (the webhook loop may too).
        held = WorkerLease.objects.filter(holder__isnull=False, name__in=LOOPS)
        wait_until(lambda: held.count() == 2, timeout=30)
        busy, unreachable = accept(link, ["busy@example.net", "x@silent.example"])
        deadline = unreachable.receive_date + timedelta(seconds=8)
        wait_until(lambda: count(pk=busy.pk, disposition="sent") == 1, timeout=20)
        wait_until(lambda: count(pk=unreachable.pk, disposition="expired") == 1, timeout=20)
        expired_seen = timezone.now()
    finally:
        log = stop_worker(worker)
        silent.stop()
    attempts = list(DeliveryAttempt.objects.filter(message=busy).order_by("attempted_at"))
    assert [a.outcome for a in attempts] == ["queued", "queued", "sent"], log
    for earlier, later in zip(attempts, attempts[1:], strict=False):
        # Due one second after the outcome before (written a moment after the reply).
        due = earlier.attempted_at + timedelta(seconds=1)
        assert due - timedelta(seconds=0.5) <= later.attempted_at <= due + timedelta(seconds=2)
    # Expired within 2 s of its deadline (the rest of the margin is this test's polling).
    assert deadline <= expired_seen <= deadline + timedelta(seconds=3)
    unreachable.refresh_from_db()
    assert unreachable.status_detail.startswith("expired: ")


def test_a_message_to_another_domain_goes_out_while_a_backlog_drains(link, mail_servers):
    """One connection, a slow MX and a backlog of many batches to one domain: a message to
    another domain waits for one batch, not for the backlog."""
    mail_servers.mx.rcpt_delay = 0.02
    mail_servers.dns.route("other.example")
    backlog = accept(link, [f"r{i}@example.net" for i in range(300)])
    worker = start_worker(mail_servers, DELIVERY_CONNECTIONS="1", DELIVERY_BATCH_SIZE="10")
    try:
        wait_until(lambda: count(disposition="sent") >= 20, timeout=30)
        [other] = accept(link, ["late@other.example"])
        took = wait_until(lambda: count(pk=other.pk, disposition="sent") == 1, timeout=10)
        left = count(recipient_domain="example.net", disposition="received")
    finally:
        log = stop_worker(worker)
    assert took < 5, log
    assert left > 0  # the backlog was still draining
    assert len(backlog) == 300


def test_a_killed_worker_loses_nothing_and_its_claims_are_taken_over_soon(link, mail_servers):
    """SIGKILL mid-drain (mid-RCPT for some batches): a new cluster takes over once the dead
    loop's lease and claims lapse, and every message ends sent; at most the few whose outcome
    was not yet written are sent twice."""
    mail_servers.mx.rcpt_delay = 0.02
    messages = accept(link, [f"r{i}@example.net" for i in range(80)])
    env = {"DELIVERY_BATCH_SIZE": "5", "DELIVERY_LOCK_SECONDS": "3"}
    worker = start_worker(mail_servers, **env)
    try:
        wait_until(lambda: count(disposition="sent") >= 20, timeout=30)
    finally:
        stop_worker(worker, kill=True)
    claimed = count(disposition="received", claim_token__isnull=False)
    # A restart takes a moment anyway; a run that comes in after it finds a lease that has
    # missed its renewals, waits for it to run out and takes the slot.
    stale = timedelta(seconds=worker_module.LEASE_SECONDS - worker_module.STALE_SECONDS)
    wait_until(
        lambda: not WorkerLease.objects.filter(expires_at__gte=timezone.now() + stale).exists(),
        timeout=10,
    )
    worker = start_worker(mail_servers, **env)
    try:
        wait_until(lambda: count(disposition="sent") == len(messages), timeout=60)
    finally:
        log = stop_worker(worker)
    assert count(disposition="sent") == len(messages), log
    received = mail_servers.mx.recipients()
    assert set(received) == {m.recipient_address for m in messages}
    assert len(received) - len(messages) <= claimed  # sent, but killed before it was written
    assert claimed <= 4 * 5  # at most the batches in flight


# --- The lease: at most DELIVERY_LOOPS runs at once -----------------------------------------


def concurrent_runs(loops: int, settings, monkeypatch) -> tuple[list[int], int]:
    """Two runs of the delivery loop started together, each turn noting how many runs are
    turning; (the turns each took, the most seen at once)."""
    from tracking import worker

    settings.DELIVERY_LOOPS = loops
    monkeypatch.setattr(worker, "RUN_SECONDS", 1.0)
    monkeypatch.setattr(worker, "loop_enqueue", lambda loop: None)  # no successors here
    lock, active, most = threading.Lock(), [0], [0]
    turns: list[int] = []
    start = threading.Barrier(2)

    def turn() -> bool:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return True

    def run() -> None:
        try:
            start.wait(timeout=10)
            turns.append(worker.loop_run("delivery", turn))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(turns), most[0]


def test_two_runs_never_work_at_once_with_one_delivery_loop(settings, monkeypatch):
    turns, most = concurrent_runs(1, settings, monkeypatch)
    assert turns[0] == 0 and turns[1] > 0  # the second found the slot held, and ended
    assert most == 1


def test_delivery_loops_two_lets_two_runs_work_at_once(settings, monkeypatch):
    turns, most = concurrent_runs(2, settings, monkeypatch)
    assert turns[0] > 0 and most == 2


def test_a_run_takes_over_the_slot_of_a_holder_that_stopped_renewing(monkeypatch):
    import uuid

    from tracking import worker

    loop = worker.LOOPS["routing"]
    dead = WorkerLease.objects.create(
        name="routing/0", holder=uuid.uuid4(), expires_at=timezone.now() + timedelta(seconds=1)
    )
    started = time.monotonic()
    lease = worker.Lease.take(loop)
    assert lease is not None and lease.holder != dead.holder
    assert 0.5 < time.monotonic() - started < worker.LEASE_SECONDS
    # A live holder's slot (renewed a moment ago) is not waited for.
    started = time.monotonic()
    assert worker.Lease.take(loop) is None
    assert time.monotonic() - started < 1
