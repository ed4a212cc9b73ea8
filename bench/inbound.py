"""Inbound mail throughput: messages a second accepted by `manage.py smtpd` and routed by the
worker (`manage.py qcluster`) to the alias's destination, an aiosmtpd sink on loopback, against
a plain aiosmtpd sink receiving the same stream in the same run (the baseline).

    make bench-inbound                       # SQLite, 2000 messages
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/iovox_bench make bench-inbound

The stream: BENCH_CLIENTS connections (4), each sending its share of BENCH_MESSAGES small
messages (a Gmail-shaped reply, ~1.7 KB) one after another on one SMTP session. Our figure is
end to end: from the first MAIL FROM until the sink holds every forwarded message.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

MESSAGES = int(os.environ.get("BENCH_MESSAGES", "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
DEADLINE = float(os.environ.get("BENCH_TIMEOUT", "600"))
ALIAS = "bench-node_bench-link@iovox.email"
DESTINATION = "sales@sink.example"


def stream(port: int, to: str, raw: bytes, count: int) -> float:
    """Send `count` messages over CLIENTS sessions; the seconds it took."""
    shares = [count // CLIENTS + (1 if i < count % CLIENTS else 0) for i in range(CLIENTS)]
    errors: list[BaseException] = []

    def client(share: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
                for _ in range(share):
                    smtp.sendmail("customer@gmail.example", [to], raw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def wait_routed(started: float) -> float:
    from conversations.models import InboundMessage

    pending = InboundMessage.objects.filter(status=InboundMessage.Status.PENDING)
    while pending.exists():
        if time.perf_counter() - started > DEADLINE:
            raise SystemExit(f"{pending.count()} messages still pending after {DEADLINE} s")
        time.sleep(0.02)
    return time.perf_counter() - started


def wait_for(sink, count: int, started: float) -> float:
    while len(sink.received) < count:
        if time.perf_counter() - started > DEADLINE:
            raise SystemExit(f"only {len(sink.received)} of {count} arrived in {DEADLINE} s")
        time.sleep(0.02)
    return time.perf_counter() - started


def main() -> None:
    from tests.mailservers import DnsServer, SmtpSink, free_port

    dns = DnsServer().start()
    dns.route("sink.example")
    baseline_sink = SmtpSink().start()
    forward_sink = SmtpSink().start()
    db_file = BASE / "var" / "bench-inbound.sqlite3"
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", f"sqlite:///{db_file}")
    if env["DATABASE_URL"].startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    smtpd_port = free_port()
    env |= {
        "DNS_NAMESERVERS": dns.nameserver,
        "SMTP_DELIVERY_PORT": str(forward_sink.port),
        "SMTPD_PORT": str(smtpd_port),
        "LOG_LEVEL": "WARNING",
        "DEBUG": env.get("DEBUG", "False"),  # as deployed (DEBUG keeps every query in memory)
        "DJANGO_SETTINGS_MODULE": "iovox_email.settings",
    }
    os.environ.update(env)
    manage = [sys.executable, str(BASE / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], check=True, env=env)

    import django

    django.setup()
    from tracking.services import directory
    from tracking.services.accounts import account_create

    account, _, _ = account_create(username="bench")
    contact = directory.contact_create(account=account, name="Sales", email=DESTINATION)
    node = directory.node_create(account=account, node_id="n", node_name="Bench node")
    link = directory.link_create(
        account=account, node=node, link_id="l", link_name="Bench link", destination=contact
    )
    directory.link_generate_alias(link=link)
    assert link.email_address == ALIAS, link.email_address

    raw = (BASE / "tests" / "fixtures" / "mail" / "gmail_reply.eml").read_bytes()
    raw = raw.replace(b"%FROM%", b"customer@gmail.example").replace(b"%TO%", ALIAS.encode())
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

    def baseline_rate() -> float:
        """The same stream into a plain aiosmtpd sink."""
        baseline_sink.received.clear()
        started = time.perf_counter()
        stream(baseline_sink.port, "anyone@sink.example", raw, MESSAGES)
        return MESSAGES / wait_for(baseline_sink, MESSAGES, started)

    # Measured before and after ours: the mean evens out a change in the machine's load.
    baseline_before = baseline_rate()

    try:
        processes = [
            subprocess.Popen([*manage, "smtpd", "--port", str(smtpd_port)], env=env),
            subprocess.Popen([*manage, "qcluster"], env=env),
        ]
        try:
            time.sleep(3)  # both up: the server listening, the cluster's workers forked
            started = time.perf_counter()
            accepted_in = stream(smtpd_port, ALIAS, raw, MESSAGES)
            routed_in = wait_routed(started)
            total_in = wait_for(forward_sink, MESSAGES, started)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
        baseline_after = baseline_rate()
    finally:
        baseline_sink.stop()
        forward_sink.stop()
        dns.stop()

    accepted, routed, forwarded = (MESSAGES / t for t in (accepted_in, routed_in, total_in))
    database = env["DATABASE_URL"].split(":", 1)[0]
    workers = env.get("Q_WORKERS", "2")
    print(f"inbound benchmark: {MESSAGES} messages of {len(raw)} bytes, {CLIENTS} sessions,")
    print(
        f"  {database}, {workers} workers; baseline {baseline_before:.0f} msg/s before ours, "
        f"{baseline_after:.0f} after"
    )
    baseline = (baseline_before + baseline_after) / 2
    rows = [
        ("baseline", "plain aiosmtpd sink", baseline),
        ("ours", "accepted by smtpd", accepted),
        ("ours", "accepted and routed", routed),
        ("ours", "accepted, routed, delivered", forwarded),
    ]
    for who, what, rate in rows:
        share = "" if who == "baseline" else f" ({rate / baseline:.0%} of baseline)"
        print(f"  {who:9} {what:29} {rate:7.0f} msg/s{share}")


if __name__ == "__main__":
    main()
