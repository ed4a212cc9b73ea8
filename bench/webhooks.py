"""Benchmark of webhooks: how fast events reach an endpoint, and what they cost mail delivery.

1. Events delivered per second: BENCH_EVENTS outbox events (10,000) posted, signed, by the
   worker's webhook sender (tracking/webhooks/sender.py, its threads as in the worker) to one
   fast endpoint on loopback, against a plain `requests` loop posting the same bodies to the
   same endpoint over one keep-alive connection. Target: >= 25%.
2. Mail delivered per second with webhooks on (an endpoint wanting every event, the sender
   posting them from another process meanwhile) against off, the same delivery code driving
   BENCH_MESSAGES messages to an aiosmtpd sink, in alternating rounds. Target: within 10%.

Run: `make bench-webhooks` (add DATABASE_URL=postgres://... for PostgreSQL); BENCH_SMALL=1 is
a quick run for CI. Everything listens on 127.0.0.1, every loop is bounded, and every process
it starts is stopped before it exits.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iovox_email.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["WEBHOOK_ALLOW_PRIVATE"] = "1"  # the endpoint is on loopback

SMALL = os.environ.get("BENCH_SMALL") == "1"
EVENTS = int(os.environ.get("BENCH_EVENTS", "1000" if SMALL else "10000"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "200" if SMALL else "2000"))
ROUNDS = 1 if SMALL else 3
PORT = int(os.environ.get("BENCH_PORT", "20300"))
RECEIVER_PORT, SINK_PORT = PORT, PORT + 1
NAME = "bench-webhooks"
DOMAIN = "bench-webhooks.example"


# --- helper processes -----------------------------------------------------------------------


def run_receiver(port: int) -> None:
    """`--receiver PORT`: a fast endpoint that answers 200 to every POST (keep-alive)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def run_sink(port: int) -> None:
    """`--sink PORT`: an aiosmtpd server that accepts every message."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, data_size_limit=None)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


def run_sender() -> None:
    """`--sender`: the webhook loop's turns until SIGTERM, as the worker runs it."""
    django_setup()
    from tracking.webhooks.sender import WebhookSender

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    sender = WebhookSender()
    deadline = time.monotonic() + 600  # bounded
    while not stopping and time.monotonic() < deadline:
        if not sender.turn():
            time.sleep(0.05)
    sender.close()


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], cwd=ROOT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


# --- set-up ---------------------------------------------------------------------------------


def django_setup() -> None:
    import django

    django.setup()


def setup():
    django_setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tracking.models import Account, Link, Node

    account, _ = Account.objects.get_or_create(name=NAME)
    node, _ = Node.objects.get_or_create(account=account, node_id=NAME, defaults={"node_name": "B"})
    link, _ = Link.objects.get_or_create(
        account=account, link_id=NAME, defaults={"node": node, "link_name": "B"}
    )
    return account, link


def cleanup(account) -> None:
    from tracking.events import subscriptions
    from tracking.models import Event, Message, Suppression, WebhookEndpoint

    WebhookEndpoint.objects.filter(account=account).delete()
    Event.objects.filter(account=account).delete()
    Message.objects.filter(account=account).delete()
    Suppression.objects.filter(account=account).delete()
    subscriptions.clear()


# --- 1. events to one fast endpoint ---------------------------------------------------------


def bench_events(account) -> tuple[float, float]:
    import requests
    from django.db import transaction

    from tracking.events import event_payload
    from tracking.models import Event, WebhookDelivery
    from tracking.webhooks.sender import WebhookSender
    from tracking.webhooks.services import webhook_create

    url = f"http://127.0.0.1:{RECEIVER_PORT}/hook"
    data = {"message_id": "0" * 32, "disposition": "sent", "subject": "Hello", "smtp_code": 250}
    with transaction.atomic():
        events = Event.objects.bulk_create(
            Event(account=account, type="email.sent", data=data) for _ in range(EVENTS)
        )
    bodies = [json.dumps(event_payload(e), separators=(",", ":")).encode() for e in events]

    with requests.Session() as session:
        started = time.perf_counter()
        for body in bodies:
            response = session.post(url, data=body, headers={"Content-Type": "application/json"})
            response.raise_for_status()
        baseline = len(bodies) / (time.perf_counter() - started)

    webhook_create(account=account, url=url)
    sender = WebhookSender()
    started = time.perf_counter()
    deadline = time.monotonic() + 600  # bounded
    delivered = 0
    while delivered < EVENTS and time.monotonic() < deadline:
        if not sender.turn(wait=0.05) and sender.idle():
            delivered = WebhookDelivery.objects.filter(
                endpoint__account=account, status="delivered"
            ).count()
    elapsed = time.perf_counter() - started
    sender.close()
    delivered = WebhookDelivery.objects.filter(endpoint__account=account, status="delivered")
    assert delivered.count() == EVENTS, f"{delivered.count()} of {EVENTS} delivered"
    return EVENTS / elapsed, baseline


# --- 2. mail delivery, webhooks off and on --------------------------------------------------


def deliver_all(domain: str) -> None:
    """Deliver every due message to `domain`, a batch at a time, with the delivery code the
    worker runs (in this process, one connection)."""
    import inspect

    from tracking.delivery.claims import messages_claim
    from tracking.delivery.deliver import batch_deliver

    keyword = "domain" in inspect.signature(batch_deliver).parameters
    for _ in range(100_000):  # bounded
        batch = messages_claim(domain=domain)
        if not batch:
            return
        if keyword:
            batch_deliver(domain=domain, messages=batch)
        else:
            batch_deliver(batch)


def delivery_round(account, link, *, webhooks: bool, sending: bool = True) -> float:
    from django.conf import settings

    from tracking.models import Message, WebhookEndpoint
    from tracking.services.messages import MessageDraft, messages_accept
    from tracking.webhooks.services import webhook_create

    Message.objects.filter(account=account).delete()
    WebhookEndpoint.objects.filter(account=account).delete()
    if webhooks:
        webhook_create(account=account, url=f"http://127.0.0.1:{RECEIVER_PORT}/hook")
    from tracking.events import subscriptions

    subscriptions.clear()
    drafts = [
        MessageDraft(
            account=account,
            link=link,
            sender_address="bob@iovox.example",
            sender_name="Bob",
            recipient_address=f"r{n}@{DOMAIN}",
            recipient_name="R",
            subject="Hello",
            text_content="Plain text. " * 20,
            html_content="<p>HTML</p>" * 20,
        )
        for n in range(MESSAGES)
    ]
    settings.DELIVERY_WAKEUP_INTERVAL = 3600  # nothing else delivers them meanwhile
    messages_accept(drafts)
    sender = spawn("--sender") if webhooks and sending else None
    try:
        started = time.perf_counter()
        deliver_all(DOMAIN)
        elapsed = time.perf_counter() - started
    finally:
        if sender is not None:
            stop(sender)
    sent = Message.objects.filter(account=account, disposition="sent").count()
    assert sent == MESSAGES, f"{sent} of {MESSAGES} sent"
    return MESSAGES / elapsed


def bench_delivery(account, link) -> tuple[float, float, float]:
    from django.conf import settings

    from tests.mailservers import DnsServer

    dns = DnsServer().start()
    dns.route(DOMAIN)
    settings.DNS_NAMESERVERS = [dns.nameserver]
    settings.SMTP_DELIVERY_PORT = SINK_PORT
    off, written, on = [], [], []
    try:
        for _ in range(ROUNDS):
            off.append(delivery_round(account, link, webhooks=False))
            written.append(delivery_round(account, link, webhooks=True, sending=False))
            on.append(delivery_round(account, link, webhooks=True))
    finally:
        dns.stop()
    return statistics.median(on), statistics.median(written), statistics.median(off)


def main() -> None:
    if sys.argv[1:2] == ["--receiver"]:
        return run_receiver(int(sys.argv[2]))
    if sys.argv[1:2] == ["--sink"]:
        return run_sink(int(sys.argv[2]))
    if sys.argv[1:2] == ["--sender"]:
        return run_sender()
    account, link = setup()
    from django.db import connection

    print(f"database: {connection.vendor}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
    helpers = [spawn("--receiver", str(RECEIVER_PORT)), spawn("--sink", str(SINK_PORT))]
    cleanup(account)
    try:
        wait_for_port(RECEIVER_PORT)
        wait_for_port(SINK_PORT)
        ours, baseline = bench_events(account)
        print(
            f"events:   {ours:8.0f} delivered/s  vs requests loop {baseline:6.0f} posts/s  "
            f"ratio {ours / baseline:6.1%}  (target >= 25%; {EVENTS} events, one endpoint)"
        )
        cleanup(account)
        on, written, off = bench_delivery(account, link)
        print(
            f"delivery: {written:8.0f} msgs/s webhooks on  vs off {off:6.0f} msgs/s  "
            f"ratio {written / off:6.1%}  (target >= 90%; events written, posted afterwards; "
            f"{MESSAGES} messages, median of {ROUNDS})"
        )
        print(
            f"delivery: {on:8.0f} msgs/s webhooks on, posted meanwhile by another process  "
            f"ratio {on / off:6.1%}  (the same CPUs post the events: {os.cpu_count()} cores)"
        )
    finally:
        cleanup(account)
        for helper in helpers:
            stop(helper)


if __name__ == "__main__":
    main()
