"""The worker in tests.

- `webhooks_send_due()`: the webhook loop's turns, each batch posted at once in this thread.
- `work()`: what the worker's resident loops do (tracking/worker.py), in this thread and this
  test's transaction, until there is nothing left to do: routing turns, and delivery turns
  (expiry, then a fair claim of a batch, delivered at once instead of by a connection thread).
- `start_worker()`: the real `manage.py qcluster` in a subprocess on the test database, for the
  loops themselves (transactional tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.db import connection

from conversations.tasks import routing_turn
from tracking.delivery.deliver import batch_deliver
from tracking.models import Message
from tracking.webhooks.sender import WebhookSender, batch_send, new_session
from tracking.worker import Delivery

ROOT = Path(__file__).resolve().parents[1]


class InThisThread:
    """Connections for `Delivery` that deliver each batch at once, in the caller's thread."""

    size = 1

    def reserve(self, timeout: float) -> bool:
        return True

    def unreserve(self) -> None:
        pass

    def submit(self, batch: list[Message]) -> None:
        batch_deliver(batch)

    def renew(self) -> None:
        pass

    def busy_with(self, domain: str) -> int:
        return 0


def deliver_due() -> int:
    """Delivery turns until one finds nothing due; how many batches were delivered."""
    delivery = Delivery(InThisThread())
    for batches in range(10_000):  # bounded
        if not delivery.turn():
            return batches
    raise AssertionError("delivery never ran out of due messages")


class PostInThisThread(WebhookSender):
    """The webhook loop's `WebhookSender`, posting each batch at once in the caller's thread
    instead of handing it to a thread of its own."""

    def __init__(self) -> None:
        super().__init__(connections=1)
        self.session = new_session()
        self.posted = 0

    def submit(self, batch) -> None:
        try:
            batch_send(batch, self.session)
            self.posted += 1
        finally:
            self.free.release()


def webhooks_send_due() -> int:
    """Webhook loop turns until one finds nothing to do; how many batches were posted."""
    sender = PostInThisThread()
    try:
        for _ in range(10_000):  # bounded
            if not sender.turn(wait=0):
                return sender.posted
    finally:
        sender.session.close()
    raise AssertionError("the webhook loop never ran out of due deliveries")


def work() -> None:
    """Routing turns until one finds nothing to route (deferred mail whose retry is due
    included), then delivery turns (routing may make more to deliver)."""
    for _ in range(1000):  # bounded
        if not routing_turn():
            break
    deliver_due()


# --- The real worker ------------------------------------------------------------------------


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_worker(mail_servers=None, **env: str) -> subprocess.Popen:
    """`manage.py worker` (qcluster, its probes on a free port, its watchdog) on the test
    database, delivering to the loopback DNS server and SMTP sink of `mail_servers`; `env` adds
    settings. Its stderr is kept for the report."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DELIVERY_LOOPS": "1",  # two only in tests/tracking/test_worker_end_to_end.py's lease tests
        "Q_WORKERS": "4",  # the loops (delivery, routing, webhooks), and one for other tasks
        "LOG_LEVEL": "WARNING",
        "SMTP_TIMEOUT": "2",
        "DNS_TIMEOUT": "1",
        **env,
    }
    if mail_servers is not None:
        env["DNS_NAMESERVERS"] = mail_servers.dns.nameserver
        env["SMTP_DELIVERY_PORT"] = str(mail_servers.mx.port)
    return subprocess.Popen(
        [sys.executable, "manage.py", "worker", "--health-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def stop_worker(worker: subprocess.Popen, *, kill: bool = False) -> str:
    """SIGKILL to its whole process group (`kill`: a worker that dies), or SIGTERM and then
    SIGKILL (the cluster's own stop waits out its loops' runs, longer than a test should);
    returns the end of what it wrote to stderr."""
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            worker.wait(timeout=0 if kill else 2)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=10)
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # its children, should any have survived it
    except ProcessLookupError:
        pass
    return worker.stderr.read().decode(errors="replace")[-3000:] if worker.stderr else ""


def wait_until(condition: Callable[[], bool], *, timeout: float, step: float = 0.05) -> float:
    """Poll `condition` until it holds (returns the seconds it took) or `timeout` passes
    (raises)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")
