"""Benchmark of sending: acceptance through gunicorn, delivery by the worker.

1. Accepted sends per second: POST /rest/v1/email through gunicorn, against GET /livez on
   the same server with the same clients in the same run.
2. Delivery by the real worker (`manage.py qcluster`, its resident delivery loop) into Postfix's
   `smtp-sink` (the fastest MX there is; every domain's MX through a loopback DNS server),
   against a plain smtplib loop sending the same messages over one connection into the same
   sink (run before each scenario and after the last; their median). Two backlogs, each
   committed at once while the worker idles: BENCH_BACKLOG messages to one domain, and as
   many over BENCH_DOMAINS domains. For each: the drain rate and its
   ratio to the smtplib loop (target >= 25%), the longest time with nothing delivered while
   messages were due (target <= 2 s, counted from the commit), how long one message to another
   domain, sent a quarter of the way through, took to be sent (target <= 5 s), and the
   worker's peak RSS. The second backlog again with DELIVERY_TRANSPORT=smtp, the same sink
   standing in for the relay: the relay's throughput against the same smtplib loop.

Run on PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> make bench-send`.
BENCH_SMALL=1: 2,000 messages over 50 domains, and fewer seconds of acceptance (CI).
Everything listens on 127.0.0.1, every loop is bounded, and every process it starts is
stopped before it exits. Knobs: BENCH_SECONDS, BENCH_CLIENTS, BENCH_BACKLOG, BENCH_DOMAINS,
BENCH_WEB_WORKERS, BENCH_PORT, BENCH_PARTS (accept,deliver), SMTP_SINK.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import signal
import smtplib
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iovox_email.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")

SMALL = os.environ.get("BENCH_SMALL") == "1"
SECONDS = float(os.environ.get("BENCH_SECONDS", "1.5" if SMALL else "9"))
ROUNDS = 3
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
BACKLOG = int(os.environ.get("BENCH_BACKLOG", "2000" if SMALL else "20000"))
DOMAINS = int(os.environ.get("BENCH_DOMAINS", "50" if SMALL else "500"))
WEB_WORKERS = int(os.environ.get("BENCH_WEB_WORKERS", "4"))
WEB_THREADS = int(os.environ.get("BENCH_WEB_THREADS", "1"))
PORT = int(os.environ.get("BENCH_PORT", "20100"))
SMTP_SINK = os.environ.get("SMTP_SINK", "/usr/sbin/smtp-sink")
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


def accept_backlog(account, link, recipients: list[str]) -> tuple[list[int], float]:
    """Accept a message to each recipient, all in one transaction; (their pks, the wall-clock
    time of the commit, as a timestamp)."""
    from django.db import transaction

    from tracking.services.messages import MessageDraft, messages_accept

    body = json.loads(SEND_BODY)
    body.pop("link_id")
    body.pop("recipient_address")
    committed: list[float] = []
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.time()))
        pks = []
        for start in range(0, len(recipients), 2000):
            drafts = [
                MessageDraft(account=account, link=link, recipient_address=recipient, **body)
                for recipient in recipients[start : start + 2000]
            ]
            pks += [message.pk for message in messages_accept(drafts)]
    return pks, committed[0] if committed else 0.0  # not yet, inside a transaction


def prepared_messages(account, link, count: int) -> list[tuple[str, str, bytes]]:
    """(MAIL FROM, RCPT TO, bytes) of `count` messages as the worker would build them."""
    from django.db import transaction

    from tracking.delivery.compose import message_outgoing_bytes
    from tracking.delivery.verp import verp_address
    from tracking.models import Message

    with transaction.atomic():
        pks, _ = accept_backlog(account, link, [f"billy@{DOMAIN}"] * count)
        prepared = [
            (verp_address(m), m.recipient_address, message_outgoing_bytes(m))
            for m in Message.objects.filter(pk__in=pks)
        ]
        transaction.set_rollback(True)  # only their bytes are wanted
    return prepared


def plain_loop(sink_port: int, prepared: list[tuple[str, str, bytes]]) -> float:
    """Messages per second of smtplib sending pre-built messages over one connection."""
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", sink_port, timeout=30) as smtp:
        for mail_from, rcpt_to, data in prepared:
            smtp.sendmail(mail_from, [rcpt_to], data)
    return len(prepared) / (time.perf_counter() - started)


def group_processes(group: int) -> list[Path]:
    """The /proc directories of the processes of a process group."""
    found = []
    for directory in Path("/proc").glob("[0-9]*"):
        try:
            if int((directory / "stat").read_text().rsplit(")", 1)[1].split()[2]) == group:
                found.append(directory)
        except (OSError, ValueError, IndexError):
            continue
    return found


def peak_rss_mb(group: int) -> tuple[float, float]:
    """(the largest peak RSS of one process, their sum) over a process group, in MB."""
    peaks = []
    for directory in group_processes(group):
        try:
            fields = dict(
                line.split(":", 1) for line in (directory / "status").read_text().splitlines()
            )
            peaks.append(int(fields["VmHWM"].split()[0]) / 1024)
        except (OSError, KeyError, ValueError):
            continue
    return max(peaks, default=0.0), sum(peaks)


def cpu_seconds(group: int) -> float:
    """User and system CPU time used so far by a process group's processes."""
    ticks = 0
    for directory in group_processes(group):
        try:
            fields = (directory / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def drain(
    account,
    link,
    database_url: str,
    dns_server,
    sink_port: int,
    recipients: list[str],
    env: dict[str, str],
):
    """Commit a backlog while a fresh worker (its settings `env` added) idles, and watch it
    drain; a dict of figures."""
    from tracking.models import Disposition, Message, WorkerLease

    # The leases of the worker of a scenario before, stopped without a goodbye: not waited for.
    WorkerLease.objects.all().delete()
    worker = spawn(
        [sys.executable, "manage.py", "qcluster"],
        env={
            "DATABASE_URL": database_url,
            "DNS_NAMESERVERS": dns_server.nameserver,
            "SMTP_DELIVERY_PORT": str(sink_port),
            "DEBUG": "False",
            "LOG_LEVEL": "WARNING",
            **env,
        },
    )
    try:
        deadline = time.monotonic() + 60
        while not WorkerLease.objects.filter(name="delivery/0", holder__isnull=False).exists():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the worker's delivery loop did not start")
            time.sleep(0.1)
        cpu_before = cpu_seconds(worker.pid)
        pks, committed = accept_backlog(account, link, recipients)
        sent = Message.objects.filter(account=account, disposition=Disposition.SENT)
        late, late_at = None, 0.0
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = sent.count()
            if late is None and done >= len(pks) // 4:
                [late], late_at = accept_backlog(account, link, ["late@late.example"])
            if done >= len(pks) + (late is not None):
                break
            time.sleep(0.2)
        rss = peak_rss_mb(worker.pid)  # its process group
        cpu = cpu_seconds(worker.pid) - cpu_before
    finally:
        stop(worker)
    dates = sorted(
        d.timestamp()
        for d in Message.objects.filter(pk__in=pks, disposition=Disposition.SENT).values_list(
            "delivery_date", flat=True
        )
    )
    if len(dates) < len(pks):
        print(f"  only {len(dates)} of {len(pks)} delivered within the time limit")
    late_date = Message.objects.filter(pk=late).values_list("delivery_date", flat=True).first()
    moments = [committed, *dates]
    return {
        "rate": len(dates) / (dates[-1] - committed) if dates else 0.0,
        "gap": max(b - a for a, b in zip(moments, moments[1:], strict=False)),
        "first": dates[0] - committed if dates else float("nan"),
        "late": late_date.timestamp() - late_at if late_date else float("inf"),
        "rss": rss,
        "cpu": cpu / max(1, len(dates)) * 1000,
    }


def bench_delivery(database_url: str, account, link) -> list[tuple[str, dict]]:
    from tests.mailservers import DnsServer, free_port

    domains = [f"d{n}.{DOMAIN}" for n in range(DOMAINS)]
    dns_server = DnsServer().start()
    for domain in [DOMAIN, "late.example", *domains]:
        dns_server.route(domain)
    sink_port = free_port()
    as_root = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root
    sink = spawn([SMTP_SINK, *as_root, f"127.0.0.1:{sink_port}", "1000"])
    results = []
    try:
        wait_for_port(sink_port)
        prepared = prepared_messages(account, link, min(BACKLOG, 5000))
        spread = [f"billy{n}@{domains[n % DOMAINS]}" for n in range(BACKLOG)]
        # The sink stands in for a relay too (no TLS, no AUTH: what is measured is ours).
        relay = {
            "DELIVERY_TRANSPORT": "smtp",
            "SMTP_RELAY_HOST": "127.0.0.1",
            "SMTP_RELAY_PORT": str(sink_port),
            "SMTP_RELAY_SECURITY": "none",
        }
        scenarios = [
            (f"{BACKLOG} to one domain", [f"billy{n}@{DOMAIN}" for n in range(BACKLOG)], {}),
            (f"{BACKLOG} over {DOMAINS} domains", spread, {}),
            (f"{BACKLOG} over {DOMAINS} domains through the SMTP relay", spread, relay),
        ]
        # The smtplib loop before each scenario and after the last; their median is the
        # baseline, since one run can land on a moment of the machine's load.
        baselines = [plain_loop(sink_port, prepared)]
        for name, recipients, env in scenarios:
            figures = drain(account, link, database_url, dns_server, sink_port, recipients, env)
            results.append((name, figures))
            cleanup(account)
            baselines.append(plain_loop(sink_port, prepared))
        print(
            "  smtplib loop into smtp-sink, before each scenario and after the last: "
            + ", ".join(f"{b:.0f}" for b in baselines)
            + " msgs/s"
        )
        baseline = statistics.median(baselines)
    finally:
        stop(sink)
        dns_server.stop()
    for _, figures in results:
        figures["ratio"] = figures["rate"] / baseline
        figures["baseline"] = baseline
    return results


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

    from tracking.models import Message

    Message.objects.filter(account=account).delete()
    OrmQ.objects.all().delete()  # the loops' successors, left by the stopped worker
    if connection.vendor == "postgresql":
        # Runs of thousands of rows leave dead tuples faster than autovacuum clears them; a
        # bloated table would measure the bloat, not the code.
        with connection.cursor() as cursor:
            for table in ("tracking_message", "tracking_deliveryattempt", "django_q_ormq"):
                cursor.execute(f"VACUUM ANALYZE {table}")


def bench_database_url() -> str:
    """DATABASE_URL naming the database this benchmark set up, for the processes it starts."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def main() -> None:
    account, link = setup()
    from django.conf import settings

    db = settings.DATABASES["default"]
    engine = db["ENGINE"].rsplit(".", 1)[-1]
    database_url = bench_database_url()
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
            for name, f in bench_delivery(database_url, account, link):
                print(
                    f"delivery, {name}: {f['rate']:6.0f} msgs/s vs smtplib loop (median) "
                    f"{f['baseline']:5.0f} msgs/s  ratio {f['ratio']:6.1%} (target >= 25%)\n"
                    f"  longest gap with messages due {f['gap']:5.2f} s (target <= 2 s; the "
                    f"first sent {f['first']:.2f} s after the commit); one sent mid-drain to "
                    f"another domain: sent in {f['late']:.2f} s (target <= 5 s); worker peak "
                    f"RSS {f['rss'][0]:.0f} MB in its largest process, {f['rss'][1]:.0f} MB "
                    f"in all; worker CPU {f['cpu']:.2f} ms a message"
                )
    finally:
        cleanup(account)


if __name__ == "__main__":
    main()
