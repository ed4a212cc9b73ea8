"""Benchmark: tracking pixel hits/s and click redirects/s through gunicorn, against /livez on
the same server in the same run.

    make bench-tracking                       # the database of DATABASE_URL (use PostgreSQL)
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/iovox_bench make bench-tracking

It migrates the database, creates an account and its messages, starts gunicorn
(BENCH_WORKERS sync workers, DEBUG off) on 127.0.0.1:BENCH_PORT, and drives it from a separate
process: an asyncio client with BENCH_CONCURRENCY connections for BENCH_SECONDS per phase,
BENCH_ROUNDS rounds of (healthz, pixel, click) in rotating order. The ratios are the median of
the rounds' ratios, which holds up on a machine whose load drifts. Each pixel and click phase
cycles over its own BENCH_MESSAGES unread messages, so most hits are first reads that mark
their message read (in real traffic about one hit in two is: a message is opened once or
twice). It then stops gunicorn gracefully and checks that every hit answered is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PORT = int(os.environ.get("BENCH_PORT", "22080"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
# BENCH_SMALL=1: short rounds and fewer messages, a few seconds in all (CI).
SMALL = os.environ.get("BENCH_SMALL") == "1"
SECONDS = float(os.environ.get("BENCH_SECONDS", "0.5" if SMALL else "4"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if SMALL else "3"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "500" if SMALL else "5000"))
BASE = f"http://127.0.0.1:{PORT}"


# --- the load generator (runs in its own process) ------------------------------------------


async def _one(paths: list[str], offset: int, deadline: float, counts: dict) -> None:
    i = offset
    while time.monotonic() < deadline:
        path = paths[i % len(paths)]
        i += 1
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Mozilla/5.0 (X11; Linux "
            f"x86_64) Bench/1.0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await reader.read()
        writer.close()
        status = data[9:12].decode() if data.startswith(b"HTTP/1.") else "---"
        counts[status] = counts.get(status, 0) + 1


async def _load(paths: list[str], seconds: float) -> dict:
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    step = max(1, len(paths) // CONCURRENCY)
    await asyncio.gather(*(_one(paths, n * step, deadline, counts) for n in range(CONCURRENCY)))
    return counts


def load_main() -> None:
    spec = json.load(sys.stdin)
    started = time.monotonic()
    counts = asyncio.run(_load(spec["paths"], spec["seconds"]))
    elapsed = time.monotonic() - started
    json.dump({"counts": counts, "elapsed": elapsed}, sys.stdout)


def run_load(paths: list[str], seconds: float) -> tuple[float, dict]:
    """Requests per second answered with 200/302, measured by a separate process."""
    result = subprocess.run(
        [sys.executable, __file__, "--load"],
        input=json.dumps({"paths": paths, "seconds": seconds}),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    outcome = json.loads(result.stdout)
    ok = sum(n for status, n in outcome["counts"].items() if status in ("200", "302"))
    return ok / outcome["elapsed"], outcome["counts"]


# --- the benchmark --------------------------------------------------------------------------


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DEBUG="False",
        LOG_LEVEL="WARNING",
        TRACKING_BASE_URL=BASE,
        DJANGO_SETTINGS_MODULE="iovox_email.settings",
    )
    return env


def prepare() -> tuple[list[list[str]], list[list[str]]]:
    import django

    os.environ.update(environment())
    django.setup()
    from django.db import connection

    from tracking.engagement import tokens
    from tracking.models import Account, Link, Message, Node, TrackingEvent

    print(f"database: {connection.vendor} ({connection.settings_dict['NAME']})")
    account, _ = Account.objects.get_or_create(name="bench-tracking")
    node, _ = Node.objects.get_or_create(
        account=account, node_id="bench", defaults={"node_name": "Bench"}
    )
    link, _ = Link.objects.get_or_create(
        account=account, link_id="bench", defaults={"node": node, "link_name": "Bench"}
    )
    Message.objects.filter(account=account).delete()
    Message.objects.bulk_create(
        Message(
            account=account,
            link=link,
            sender_address="a@x.example",
            recipient_address="b@y.example",
        )
        for _ in range(2 * ROUNDS * MESSAGES)
    )
    ids = list(Message.objects.filter(account=account).values_list("message_id", flat=True))
    # Each phase of each round has its own unread messages, so hits keep marking them read.
    slices = [ids[n * MESSAGES : (n + 1) * MESSAGES] for n in range(2 * ROUNDS)]
    pixels = [[urlsplit(tokens.open_url(m)).path for m in ids] for ids in slices[:ROUNDS]]
    clicks = [
        [
            urlsplit(tokens.click_url(m, f"https://shop.example/offer?id={n}&utm_source=mail")).path
            for n, m in enumerate(ids)
        ]
        for ids in slices[ROUNDS:]
    ]
    if connection.vendor == "postgresql":
        # What autovacuum does in production (it may be off on a shared test server): without
        # statistics the planner scans whole tables for the batch's queries.
        with connection.cursor() as cursor:
            for model in (Message, TrackingEvent):
                cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    connection.close()
    return pixels, clicks


def start_server() -> subprocess.Popen:
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "iovox_email.wsgi",
            f"--workers={WORKERS}",
            f"--bind=127.0.0.1:{PORT}",
            "--graceful-timeout=20",
            "--log-level=warning",
        ],
        cwd=ROOT,
        env=environment(),
    )
    import urllib.request

    for _ in range(100):
        time.sleep(0.1)
        try:
            urllib.request.urlopen(f"{BASE}/livez", timeout=1).read()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit("gunicorn did not start") from None
    server.terminate()
    raise SystemExit("gunicorn did not answer /livez")


def server_cpu(server: subprocess.Popen) -> dict[int, float]:
    """CPU seconds used so far by gunicorn's processes and this database's PostgreSQL
    backends: the server's side of the work, which the machine's other load does not skew."""
    from django.db import connection

    pids = {server.pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server.pid:  # ppid
            pids.add(int(stat.parent.name))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
            pids.update(pid for (pid,) in cursor.fetchall())
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        used[pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return used


def main() -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=environment(),
        check=True,
    )
    pixels, clicks = prepare()
    server = start_server()
    rates: dict[str, list[float]] = {"healthz": [], "pixel": [], "click": []}
    cpu: dict[str, list[float]] = {"healthz": [], "pixel": [], "click": []}
    answered = 0
    try:
        run_load(["/livez"], 1)  # warm-up: imports, connections
        for round_ in range(ROUNDS):
            phases = [
                ("healthz", ["/livez"]),
                ("pixel", pixels[round_]),
                ("click", clicks[round_]),
            ]
            # Rotate the order so no kind always runs first (the machine's load drifts).
            for name, paths in phases[round_ % 3 :] + phases[: round_ % 3]:
                before = server_cpu(server)
                rate, counts = run_load(paths, SECONDS)
                after = server_cpu(server)
                used = sum(t - before.get(pid, 0.0) for pid, t in after.items())
                rates[name].append(rate)
                cpu[name].append(used / max(1, sum(counts.values())))
                if name != "healthz":
                    answered += sum(n for s, n in counts.items() if s in ("200", "302"))
                print(f"round {round_ + 1}  {name:8} {rate:7.0f} req/s   responses {counts}")
    finally:
        server.send_signal(signal.SIGTERM)  # graceful: workers write their buffered events
        server.wait(timeout=60)

    for name in ("pixel", "click"):
        ratios = [hit / base for hit, base in zip(rates[name], rates["healthz"], strict=True)]
        print(
            f"{name} / healthz = {statistics.median(ratios):.0%} (median of rounds: "
            f"{', '.join(f'{r:.0%}' for r in ratios)}; target >= 50%)"
        )

    per_request = {name: statistics.median(values) for name, values in cpu.items()}
    postgres = "postgres" in os.environ.get("DATABASE_URL", "")
    print(
        f"server CPU per request (gunicorn{' + PostgreSQL backends' if postgres else ''}): "
        + ", ".join(f"{name} {us * 1e6:.0f} us" for name, us in per_request.items())
    )
    for name in ("pixel", "click"):
        print(
            f"{name} / healthz by server CPU = {per_request['healthz'] / per_request[name]:.0%}"
            " (the rate ratio on a machine with nothing else running)"
        )

    from django.db.models import F, Sum

    from tracking.models import Message, ReadDisposition, TrackingEvent

    messages = Message.objects.filter(account__name="bench-tracking")
    counted = messages.aggregate(n=Sum(F("open_count") + F("click_count")))["n"] or 0
    stored = TrackingEvent.objects.filter(message__account__name="bench-tracking").count()
    read = messages.filter(read_disposition=ReadDisposition.READ).count()
    print(
        f"hits counted {counted} of {answered} answered ({stored} kept as events); "
        f"messages marked read {read}"
    )
    if counted != answered:
        raise SystemExit("some answered hits were not counted")


if __name__ == "__main__":
    if sys.argv[1:] == ["--load"]:
        load_main()
    else:
        main()
