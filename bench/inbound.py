"""Inbound mail through `manage.py smtpd`, with the worker (`manage.py qcluster`) routing it to
the alias's destination (an aiosmtpd sink on loopback), each figure against a plain aiosmtpd
server receiving the same in the same run (the baseline).

    make bench-inbound                       # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/iovox_bench make bench-inbound
    BENCH_SMALL=1 make bench-inbound         # a few seconds (CI)

1. Throughput: BENCH_CLIENTS connections (4), each sending its share of BENCH_MESSAGES (2,000;
   200 small) small messages (a Gmail-shaped reply, ~1.7 KB) one after another on one SMTP
   session. Ours is end to end: from the first MAIL FROM until the sink holds every forwarded
   message. The baseline is a plain aiosmtpd sink in this process fed the same stream, before
   and after ours.
2. Big messages: BENCH_BIG_COUNT (4; 2 small) messages of BENCH_BIG_MB (20; 2 small) MB sent
   at once, each on its own connection, to the alias. Ours: the smtpd process's peak memory
   (VmHWM) and how much the database grew once they were stored, then once routed and
   delivered. The baseline is the peak memory of `python -m aiosmtpd` (its Sink handler, which
   drops what it receives) sent the same.

The server's limits are raised for the run (one client sends everything).
"""

from __future__ import annotations

import base64
import os
import random
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BASE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE))

SMALL = os.environ.get("BENCH_SMALL") == "1"
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "200" if SMALL else "2000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "4"))
BIG_COUNT = int(os.environ.get("BENCH_BIG_COUNT", "2" if SMALL else "4"))
BIG_MB = float(os.environ.get("BENCH_BIG_MB", "2" if SMALL else "20"))
DEADLINE = float(os.environ.get("BENCH_TIMEOUT", "600"))
ALIAS = "bench-node_bench-link@iovox.email"
DESTINATION = "sales@sink.example"
MB = 1024 * 1024
# The limits stay on, so their cost is in the figures, but high enough for one client to send
# everything.
HIGH_LIMITS = {
    "SMTPD_MAX_CONNECTIONS": "1000",
    "SMTPD_MAX_CONNECTIONS_PER_CLIENT": "1000",
    "SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE": "1000000",
    "SMTPD_DAILY_BYTES_PER_RECIPIENT": str(10**12),
}


def stream(port: int, to: str, raw: bytes, count: int) -> float:
    """Send `count` messages over CLIENTS sessions; the seconds it took."""
    shares = [count // CLIENTS + (1 if i < count % CLIENTS else 0) for i in range(CLIENTS)]
    return _clients(port, to, [[raw] * share for share in shares])


def _clients(port: int, to: str, sessions: list[list[bytes]]) -> float:
    """One SMTP session per list of messages, all at once; the seconds until all were sent."""
    errors: list[BaseException] = []

    def client(messages: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
                for raw in messages:
                    smtp.sendmail("customer@gmail.example", [to], raw)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(messages,)) for messages in sessions]
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


def big_message(size: int, n: int) -> bytes:
    """A message of about `size` bytes: a line of text and an attachment of random bytes (as
    incompressible as the zip or PDF a real one would be), in base64 lines of 76."""
    head = (
        f"From: customer@gmail.example\r\nTo: {ALIAS}\r\nSubject: big {n}\r\n"
        f"Message-ID: <big{n}@gmail.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="big.bin"\r\n\r\n'
    ).encode()
    payload = base64.encodebytes(random.Random(n).randbytes(size * 57 // 78))
    return head + payload.replace(b"\n", b"\r\n") + b"--b--\r\n"


def memory(pid: int) -> dict[str, int]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM), in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def cpu_seconds(pid: int) -> float:
    """The CPU time the process has used so far (user and system)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def database_sizes() -> dict[str, int]:
    """Bytes the database takes: in all, its inbound and message tables (with their TOAST
    and indexes), and, on PostgreSQL, the write-ahead log's position (its growth is what was
    written to the log, by every database of the cluster: noisy when others work)."""
    from django.db import connection

    if connection.vendor == "sqlite":
        name = Path(connection.settings_dict["NAME"])
        files = [Path(f"{name}{suffix}") for suffix in ("", "-wal")]
        return {"database": sum(f.stat().st_size for f in files if f.exists())}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_database_size(current_database()),"
            " pg_total_relation_size('conversations_inboundmessage'),"
            " pg_total_relation_size('tracking_message'),"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"
        )
        total, inbound, message, wal = cursor.fetchone()
    return {"database": total, "inbound": inbound, "message": message, "wal": int(wal)}


def started_server(command: list[str], env: dict, banner: str) -> subprocess.Popen:
    """A server process, once it has printed `banner` (it listens)."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in process.stdout:
        if banner in line:
            threading.Thread(target=process.stdout.read, daemon=True).start()  # drain
            return process
    raise SystemExit(f"{command[1:3]} exited before listening: {process.wait()}")


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def peak_memory(process: subprocess.Popen, port: int, to: str, big: list[bytes]) -> dict:
    """The server's memory before and at its peak while it receives `big` all at once; then
    the server is stopped."""
    try:
        idle = memory(process.pid)["VmRSS"]
        seconds = _clients(port, to, [[raw] for raw in big])
        time.sleep(1)  # what it keeps once the messages are gone
        now = memory(process.pid)
        return {"idle": idle, "peak": now["VmHWM"], "kept": now["VmRSS"], "seconds": seconds}
    finally:
        stop(process)


def fresh_database(url: str) -> str:
    """An empty database of the bench's own: on the PostgreSQL server of `url` when it names
    one (its name with `_bench_inbound` added, made anew and dropped at the end), else an
    SQLite file under var/."""
    if not url.startswith("postgres"):
        db_file = BASE / "var" / "bench-inbound.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{db_file}"
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/") + "_bench_inbound"
    server = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass
class Run:
    """What both measures share: the servers, the environment, the commands."""

    env: dict
    manage: list[str]
    smtpd_port: int
    forward_sink: object  # tests.mailservers.SmtpSink

    @property
    def smtpd(self) -> list[str]:
        return [*self.manage, "smtpd", "--port", str(self.smtpd_port)]

    def worker(self) -> subprocess.Popen:
        return subprocess.Popen([*self.manage, "qcluster"], env=self.env)


def drop_database(url: str) -> None:
    """Drop the bench's PostgreSQL database (SQLite's file stays for a look, until the next
    run)."""
    if not url.startswith("postgres"):
        return
    import psycopg
    from django.db import connections

    connections.close_all()
    parts = urlsplit(url)
    server = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}"')


def main() -> None:
    from tests.mailservers import DnsServer, SmtpSink, free_port

    dns = DnsServer().start()
    dns.route("sink.example")
    forward_sink = SmtpSink().start()
    env = dict(os.environ)
    env["DATABASE_URL"] = fresh_database(env.get("DATABASE_URL", ""))
    smtpd_port = free_port()
    env |= HIGH_LIMITS | {
        "DNS_NAMESERVERS": dns.nameserver,
        "SMTP_DELIVERY_PORT": str(forward_sink.port),
        "SMTPD_PORT": str(smtpd_port),
        "LOG_LEVEL": "WARNING",
        "DEBUG": env.get("DEBUG", "False"),  # as deployed (DEBUG keeps every query in memory)
        "DJANGO_SETTINGS_MODULE": "iovox_email.settings",
    }
    os.environ.update(env)
    run = Run(env, [sys.executable, str(BASE / "manage.py")], smtpd_port, forward_sink)
    subprocess.run([*run.manage, "migrate", "--noinput", "-v0"], check=True, env=env)

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

    database = env["DATABASE_URL"].split(":", 1)[0]
    print(f"inbound benchmark on {database}, {env.get('Q_WORKERS', '2')} workers")
    try:
        if MESSAGES:
            throughput(run)
        if BIG_COUNT:
            big_messages(run)
    finally:
        forward_sink.stop()
        dns.stop()
        drop_database(env["DATABASE_URL"])


def throughput(run: Run) -> None:
    from tests.mailservers import SmtpSink

    raw = (BASE / "tests" / "fixtures" / "mail" / "gmail_reply.eml").read_bytes()
    raw = raw.replace(b"%FROM%", b"customer@gmail.example").replace(b"%TO%", ALIAS.encode())
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    baseline_sink = SmtpSink().start()

    def baseline_rate() -> float:
        """The same stream into a plain aiosmtpd sink."""
        baseline_sink.received.clear()
        started = time.perf_counter()
        stream(baseline_sink.port, "anyone@sink.example", raw, MESSAGES)
        return MESSAGES / wait_for(baseline_sink, MESSAGES, started)

    run.forward_sink.received.clear()
    try:
        # Measured before and after ours: the mean evens out a change in the machine's load.
        baseline_before = baseline_rate()
        processes = [started_server(run.smtpd, run.env, "listening"), run.worker()]
        try:
            time.sleep(3)  # the cluster's workers forked
            smtpd_cpu = cpu_seconds(processes[0].pid)
            started = time.perf_counter()
            accepted_in = stream(run.smtpd_port, ALIAS, raw, MESSAGES)
            routed_in = wait_routed(started)
            total_in = wait_for(run.forward_sink, MESSAGES, started)
            smtpd_cpu = cpu_seconds(processes[0].pid) - smtpd_cpu
        finally:
            stop(*processes)
        baseline_after = baseline_rate()
    finally:
        baseline_sink.stop()

    accepted, routed, forwarded = (MESSAGES / t for t in (accepted_in, routed_in, total_in))
    print(f"throughput: {MESSAGES} messages of {len(raw)} bytes over {CLIENTS} sessions")
    print(f"  baseline {baseline_before:.0f} msg/s before ours, {baseline_after:.0f} after")
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
    print(f"  smtpd's CPU: {smtpd_cpu * 1000 / MESSAGES:.2f} ms a message")


def big_messages(run: Run) -> None:
    from tests.mailservers import free_port

    big = [big_message(int(BIG_MB * MB), n) for n in range(BIG_COUNT)]
    sink_port = free_port()
    sink = [sys.executable, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink"]
    sink += ["-s", str(int(BIG_MB * 2 * MB)), "-l", f"127.0.0.1:{sink_port}"]
    baseline = peak_memory(started_sink(sink, run.env, sink_port), sink_port, "a@b.c", big)
    run.forward_sink.received.clear()
    before = database_sizes()
    smtpd = started_server(run.smtpd, run.env, "listening")
    ours = peak_memory(smtpd, run.smtpd_port, ALIAS, big)
    stored = database_sizes()
    worker = run.worker()
    try:
        started = time.perf_counter()
        wait_routed(started)
        wait_for(run.forward_sink, BIG_COUNT, started)
    finally:
        stop(worker)
    routed = database_sizes()

    size = sum(len(raw) for raw in big)
    print(f"big messages: {BIG_COUNT} of {len(big[0]) / MB:.1f} MB at once ({size / MB:.0f} MB)")
    for who, figures in (("baseline", baseline), ("ours", ours)):
        grown = figures["peak"] - figures["idle"]
        print(
            f"  {who:9} peak memory {figures['peak'] / MB:4.0f} MB, {grown / MB:4.0f} MB over "
            f"idle ({grown / size:.1f}x the mail), {figures['kept'] / MB:4.0f} MB after; "
            f"accepted in {figures['seconds']:.1f} s"
        )
    grown = (ours["peak"] - ours["idle"]) / (baseline["peak"] - baseline["idle"])
    print(f"  ours: {grown:.1f}x the baseline's growth")
    for what, sizes in (("stored", stored), ("routed and delivered", routed)):
        grown = ", ".join(
            f"{name} +{(sizes[name] - before[name]) / MB:.0f} MB" for name in sorted(sizes)
        )
        print(f"  database once {what}: {grown}")


def started_sink(command: list[str], env: dict, port: int) -> subprocess.Popen:
    """`python -m aiosmtpd`, once it accepts connections (it prints nothing when it does)."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    for _ in range(200):  # bounded: 10 s
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=5).quit()
            return process
        except OSError:
            time.sleep(0.05)
    stop(process)
    raise SystemExit("the plain aiosmtpd server did not start")


if __name__ == "__main__":
    main()
