"""Benchmark of sending: acceptance through gunicorn, delivery by the worker.

1. Accepted sends per second: POST /rest/v1/email through gunicorn, against GET /livez on
   the same server with the same clients in the same run.
2. Delivered messages per second: the real worker (`manage.py qcluster`) delivering accepted
   messages to an aiosmtpd sink (looked up through a loopback DNS server), against a plain
   smtplib loop sending the same messages over one reused connection to the same sink.

Run on PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> make bench-send`.
Everything listens on 127.0.0.1, every loop is bounded, and every process it starts is
stopped before it exits. Knobs: BENCH_SECONDS, BENCH_CLIENTS, BENCH_MESSAGES,
BENCH_WEB_WORKERS, BENCH_Q_WORKERS, BENCH_PORT.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iovox_email.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

SECONDS = float(os.environ.get("BENCH_SECONDS", "9"))
ROUNDS = 3
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "4"))
WEB_THREADS = int(os.environ.get("BENCH_WEB_THREADS", "1"))
Q_WORKERS = int(os.environ.get("BENCH_Q_WORKERS", "4"))
PORT = int(os.environ.get("BENCH_PORT", "20100"))
PARTS = os.environ.get("BENCH_PARTS", "accept,deliver").split(",")
USERNAME, SECURE_KEY = "bench-send", "bench-send-secure-key-0123456789abcdef0123"
DOMAIN = "bench.example"

SEND_BODY = json.dumps(
    {
        "link_id": "bench-link",
        "sender_address": "bob.bob@iovox.com",
        "sender_name": "Bob Bob",
        "recipient_address": f"billy@{DOMAIN}",
        "recipient_name": "Billy Bob",
        "subject": "This is an E-Mail",
        "text_content": "This is plain text. " * 20,
        "html_content": "<html><body>" + "<p>This is HTML</p>" * 20 + "</body></html>",
    }
).encode()


# --- processes --------------------------------------------------------------------------------


def spawn(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # one process group: stopping it stops the children too
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def wait_for_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


# --- 1. acceptance ----------------------------------------------------------------------------


def client_loop(args) -> tuple[int, int]:
    """One client: keep-alive requests for `seconds`; (successes, failures)."""
    method, path, body, expect, seconds = args
    headers = {"username": USERNAME, "secureKey": SECURE_KEY, "Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    ok = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == expect:
                ok += 1
            else:
                failed += 1
        except (OSError, http.client.HTTPException):
            failed += 1
            connection.close()
    connection.close()
    return ok, failed


def rate(method: str, path: str, body: bytes | None, expect: int, seconds: float):
    """(requests answered as expected per second, failures) with CLIENTS clients."""
    with multiprocessing.get_context("fork").Pool(CLIENTS) as pool:
        results = pool.map(client_loop, [(method, path, body, expect, seconds)] * CLIENTS)
    ok = sum(r[0] for r in results)
    return ok / seconds, sum(r[1] for r in results)


def bench_acceptance(database_url: str) -> tuple[float, float]:
    web = spawn(
        [sys.executable, "-m", "gunicorn", "iovox_email.wsgi", "-b", f"127.0.0.1:{PORT}"]
        + ["-w", str(WEB_WORKERS), "-k", "gthread", "--threads", str(WEB_THREADS)]
        + ["--keep-alive", "30", "--log-level", "warning"],
        env={"DATABASE_URL": database_url, "DEBUG": "False", "LOG_LEVEL": "WARNING"},
    )
    try:
        wait_for_port(PORT)
        rate("GET", "/livez", None, 200, 1)  # warm up both paths
        rate("POST", "/rest/v1/email", SEND_BODY, 201, 1)
        # Alternate short rounds, so a change in the machine's load hits both sides alike.
        healthz = sends = 0.0
        healthz_failed = sends_failed = 0
        for _ in range(ROUNDS):
            ok, failed = rate("GET", "/livez", None, 200, SECONDS / ROUNDS)
            healthz, healthz_failed = healthz + ok / ROUNDS, healthz_failed + failed
            ok, failed = rate("POST", "/rest/v1/email", SEND_BODY, 201, SECONDS / ROUNDS)
            sends, sends_failed = sends + ok / ROUNDS, sends_failed + failed
    finally:
        stop(web)
    if healthz_failed or sends_failed:
        print(f"  failures: healthz {healthz_failed}, send {sends_failed}")
    return sends, healthz


# --- 2. delivery ------------------------------------------------------------------------------


def run_sink(port: int) -> None:
    """`bench/send.py --sink PORT`: an aiosmtpd server that accepts everything."""
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            return "250 2.0.0 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port, data_size_limit=None)
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


def accept_messages(account, link, count: int, committed: list | None = None) -> list[int]:
    """Accept `count` messages in one transaction; their delivery tasks are enqueued on
    commit. `committed` gets the time of the commit, before those tasks are enqueued."""
    from django.db import transaction

    from tracking.services.messages import message_accept

    body = json.loads(SEND_BODY)
    body.pop("link_id")
    with transaction.atomic():
        if committed is not None:
            transaction.on_commit(lambda: committed.append(time.perf_counter()))
        return [message_accept(account=account, link=link, **body).pk for _ in range(count)]


def bench_delivery(database_url: str, account, link) -> tuple[float, float]:
    from django.db import transaction

    from tests.mailservers import DnsServer, free_port
    from tracking.delivery.mime import message_outgoing_bytes
    from tracking.delivery.verp import verp_address
    from tracking.models import Disposition, Message

    dns_server = DnsServer().start()
    dns_server.route(DOMAIN)
    sink_port = free_port()
    sink = spawn([sys.executable, str(Path(__file__).resolve()), "--sink", str(sink_port)])
    worker = None
    try:
        wait_for_port(sink_port)

        # Baseline: the same kind of messages, built beforehand, over one reused connection,
        # measured before and after the worker.
        with transaction.atomic():
            pks = accept_messages(account, link, MESSAGES)
            prepared = [
                (verp_address(m), m.recipient_address, message_outgoing_bytes(m))
                for m in Message.objects.filter(pk__in=pks).prefetch_related("attachments")
            ]
            transaction.set_rollback(True)  # only their bytes are wanted, and no tasks
        baseline_before = plain_loop(sink_port, prepared)

        worker = spawn(
            [sys.executable, "manage.py", "qcluster"],
            env={
                "DATABASE_URL": database_url,
                "DNS_NAMESERVERS": dns_server.nameserver,
                "SMTP_DELIVERY_PORT": str(sink_port),
                "Q_WORKERS": str(Q_WORKERS),
                "DEBUG": "False",
                "LOG_LEVEL": "WARNING",
            },
        )
        time.sleep(4)  # let the cluster start its workers
        committed: list[float] = []
        pks = accept_messages(account, link, MESSAGES, committed)  # tasks enqueued on commit
        started = committed[0]
        deadline = time.monotonic() + 300
        done = 0
        while time.monotonic() < deadline:
            done = Message.objects.filter(pk__in=pks, disposition=Disposition.SENT).count()
            if done == len(pks):
                break
            time.sleep(0.05)
        delivered = done / (time.perf_counter() - started)
        if done < len(pks):
            print(f"  only {done} of {len(pks)} delivered within the time limit")
        stop(worker)
        # The baseline again, after: the mean of both evens out a change in the machine's load.
        baseline_after = plain_loop(sink_port, prepared)
        print(
            f"  smtplib loop: {baseline_before:.0f} msgs/s before the worker, "
            f"{baseline_after:.0f} after"
        )
        baseline = (baseline_before + baseline_after) / 2
    finally:
        if worker is not None:
            stop(worker)
        stop(sink)
        dns_server.stop()
    return delivered, baseline


def plain_loop(sink_port: int, prepared: list[tuple[str, str, bytes]]) -> float:
    """Messages per second of smtplib sending pre-built messages over one connection."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", sink_port, timeout=30) as smtp:
        for mail_from, rcpt_to, data in prepared:
            smtp.sendmail(mail_from, [rcpt_to], data)
    return len(prepared) / (time.perf_counter() - started)


# --- setup and report -------------------------------------------------------------------------


def setup():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from tracking.models import Account, ApiCredential, Link, Node
    from tracking.models.accounts import hash_secure_key

    account, _ = Account.objects.get_or_create(name=USERNAME)
    ApiCredential.objects.update_or_create(
        username=USERNAME,
        defaults={"account": account, "key_hash": hash_secure_key(SECURE_KEY), "is_active": True},
    )
    node, _ = Node.objects.get_or_create(
        account=account, node_id="bench-node", defaults={"node_name": "Bench"}
    )
    link, _ = Link.objects.get_or_create(
        account=account, link_id="bench-link", defaults={"node": node, "link_name": "Bench"}
    )
    return account, link


def cleanup(account) -> None:
    from django.db import connection
    from django_q.models import OrmQ

    from tracking.models import DeliveryWakeup, Message

    Message.objects.filter(account=account).delete()
    OrmQ.objects.all().delete()  # the queued tasks of the messages just deleted
    DeliveryWakeup.objects.all().delete()  # ... and the note that they were queued
    if connection.vendor == "postgresql":
        # Runs of thousands of rows leave dead tuples faster than autovacuum clears them; a
        # bloated table would measure the bloat, not the code.
        with connection.cursor() as cursor:
            for table in ("tracking_message", "tracking_deliveryattempt", "django_q_ormq"):
                cursor.execute(f"VACUUM ANALYZE {table}")


def main() -> None:
    if sys.argv[1:2] == ["--sink"]:
        run_sink(int(sys.argv[2]))
        return
    account, link = setup()
    from django.conf import settings

    db = settings.DATABASES["default"]
    engine = db["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        database_url = f"sqlite:///{db['NAME']}"
    else:
        database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    print(f"database: {engine} {db['NAME']}; {os.cpu_count()} cores")
    cleanup(account)
    try:
        if "accept" in PARTS:
            sends, healthz = bench_acceptance(database_url)
            print(
                f"acceptance: {sends:8.0f} sends/s   vs /livez {healthz:8.0f} req/s   "
                f"ratio {sends / healthz:6.1%}  (target >= 15%; gunicorn {WEB_WORKERS} workers x "
                f"{WEB_THREADS} threads, {CLIENTS} keep-alive clients, {SECONDS:.0f}s each in "
                f"{ROUNDS} alternating rounds)"
            )
            cleanup(account)
        if "deliver" in PARTS:
            delivered, baseline = bench_delivery(database_url, account, link)
            print(
                f"delivery:   {delivered:8.0f} msgs/s    vs smtplib loop {baseline:6.0f} msgs/s  "
                f"ratio {delivered / baseline:6.1%}  (target >= 25%; {MESSAGES} messages, "
                f"{Q_WORKERS} worker processes)"
            )
    finally:
        cleanup(account)


if __name__ == "__main__":
    main()
