"""Benchmark of GET /rest/v1/email/search at a million messages, through a real gunicorn.

    make bench-search                      # or: .venv/bin/python bench/search.py --help
    BENCH_SMALL=1 make bench-search        # 5,000 rows, a few seconds (CI)
    .venv/bin/python bench/search.py --rows 200000 --requests 20

1. Loads `--rows` messages (default 1,000,000) across 5 accounts, 250 nodes and 5000 links
   into PostgreSQL (`--database`, default iovox_bench_search) with COPY, the message indexes
   dropped during the load and rebuilt from their own definitions afterwards, then VACUUM
   ANALYZE. A second run reuses the data when the row count matches (`--reload` drops the
   database and loads it again; small mode always does).
2. Starts gunicorn (one sync worker, DEBUG off) on `--port` and times typical searches of the
   largest account (half of all rows). Each request is paired, in the same run, with the very
   SQL the view executes (captured from the ORM: the page, and the count when needed) run with
   psycopg and fetching every row: `ratio` is API time over SQL time. `/livez` is the
   baseline of what any request costs. The worker's peak RSS (VmHWM) is read after each case.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ACCOUNTS = 5
NODES_PER_ACCOUNT = 50
LINKS_PER_NODE = 20
USERNAME, SECURE_KEY = "bench0", "bench0-secure-key-0123456789abcdef0123456789"
DISPOSITIONS = [
    ("sent", 80),
    ("queued", 4),
    ("undeliverable", 5),
    ("noMxRecord", 2),
    ("received_bounced", 3),
    ("expired", 2),
    ("received", 2),
    ("no_rules", 1),
    ("rule_error", 1),
]
COLUMNS = (
    "message_id account_id link_id direction conversation_id sender_address sender_name "
    "recipient_address recipient_name proxy_address proxy_name subject text_content "
    "html_content headers smtp_message_id receive_date delivery_date disposition "
    "read_disposition read_first_date attempt_count state_version last_smtp_response "
    "status_detail recipient_domain"
).split()


def arguments() -> argparse.Namespace:
    # BENCH_SMALL=1: a few thousand rows in a database of their own, for CI.
    small = os.environ.get("BENCH_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000 if small else 1_000_000)
    parser.add_argument(
        "--database", default="iovox_bench_search_small" if small else "iovox_bench_search"
    )
    parser.add_argument("--port", type=int, default=21080)
    parser.add_argument("--requests", type=int, default=3 if small else 30, help="per case")
    parser.add_argument("--reload", action="store_true", help="load the data again")
    parser.add_argument("--explain", action="store_true", help="print each case's plans")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    url = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    os.environ.update(DATABASE_URL=url, DJANGO_SETTINGS_MODULE="iovox_email.settings")
    # Small mode starts from an empty database every run, so a schema left by an older
    # checkout can never break CI; the full size keeps its million rows between runs.
    ensure_database(args.database, fresh=args.reload or os.environ.get("BENCH_SMALL") == "1")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, check=True
    )
    import django

    django.setup()
    started = time.perf_counter()
    loaded = load(args.rows, args.reload)
    print(
        f"data: {args.rows:,} messages {'loaded' if loaded else 'reused'} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    server = start_gunicorn(args.port, url)
    try:
        run_cases(args, server)
    finally:
        server.terminate()
        server.wait(timeout=20)


# --- Data ----------------------------------------------------------------------------------


def ensure_database(name: str, fresh: bool) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
        if fresh:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            c.execute(f'CREATE DATABASE "{name}"')


def load(rows: int, reload: bool) -> bool:
    """Fill the database unless it already holds exactly `rows` bench messages."""
    from django.db import connection

    from tracking.models import Message

    if not reload and Message.objects.count() == rows:
        return False
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE tracking_account, tracking_message RESTART IDENTITY CASCADE")
    links = create_directory()
    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '256MB'")
        indexes = drop_secondary_indexes(cursor)
        copy_messages(cursor, rows, links)
        for sql in indexes:
            cursor.execute(sql)
        # What autovacuum would have done by now: statistics for every table (the planner
        # needs the links' too) and a visibility map for index-only scans.
        cursor.execute("VACUUM (ANALYZE)")
    return True


def create_directory() -> dict[int, list[int]]:
    """Accounts (the first with an API credential), nodes and links; link pks by account."""
    from tracking.models import Account, ApiCredential, Link, Node
    from tracking.models.accounts import hash_secure_key

    links: dict[int, list[int]] = {}
    for a in range(ACCOUNTS):
        account = Account.objects.create(name=f"bench{a}")
        if a == 0:
            ApiCredential.objects.create(
                account=account, username=USERNAME, key_hash=hash_secure_key(SECURE_KEY)
            )
        nodes = Node.objects.bulk_create(
            Node(account=account, node_id=f"N{n}", node_name=f"Dealer {n}", node_type="Dealer")
            for n in range(NODES_PER_ACCOUNT)
        )
        created = Link.objects.bulk_create(
            Link(
                account=account,
                node=nodes[i // LINKS_PER_NODE],
                link_id=f"L{i}",
                link_name=f"Vehicle {i}",
                link_type="Vehicle",
            )
            for i in range(NODES_PER_ACCOUNT * LINKS_PER_NODE)
        )
        links[account.pk] = [link.pk for link in created]
    return links


def drop_secondary_indexes(cursor) -> list[str]:
    """Drop the message indexes that back no constraint; return the SQL to rebuild them."""
    cursor.execute(
        """SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
           FROM pg_index i
           WHERE i.indrelid = 'tracking_message'::regclass
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)"""
    )
    found = cursor.fetchall()
    for name, _ in found:
        cursor.execute(f'DROP INDEX "{name}"')
    return [sql for _, sql in found]


def copy_messages(cursor, rows: int, links: dict[int, list[int]]) -> None:
    """COPY `rows` messages over the last 365 days, in arrival order. Half belong to the first
    account; links are skewed (link L0 gets about 10% of its account's mail, node N0 about
    27%); 30% of messages are in conversations through a proxy address."""
    rng = random.Random(5)
    now = datetime.now(UTC).timestamp()
    times = sorted(now - rng.random() * 365 * 86400 for _ in range(rows))
    accounts = list(links)
    weights = [ACCOUNTS - 1] + [1] * (ACCOUNTS - 1)
    dispositions, disposition_weights = zip(*DISPOSITIONS, strict=True)
    recent: dict[int, list[str]] = {a: [] for a in accounts}
    raw = cursor.connection  # psycopg connection under Django's wrapper
    stamp = _timestamp
    defaults, rest = other_columns()
    columns = ", ".join(COLUMNS + defaults)
    with raw.cursor().copy(f"COPY tracking_message ({columns}) FROM STDIN") as copy:
        block: list[str] = []
        for received in times:
            account = rng.choices(accounts, weights)[0]
            link = links[account][int(len(links[account]) * rng.random() ** 3)]
            conversation = r"\N"
            proxy, proxy_name = "", ""
            if rng.random() < 0.3:
                pool = recent[account]
                if pool and rng.random() < 0.6:
                    conversation = rng.choice(pool)
                else:
                    conversation = str(uuid.uuid4())
                    pool.append(conversation)
                    if len(pool) > 500:
                        pool.pop(0)
                proxy, proxy_name = f"{conversation[:13].replace('-', '')}@proxy.example", "Company"
            disposition = rng.choices(dispositions, disposition_weights)[0]
            delivered = read = r"\N"
            read_disposition = "unread"
            if disposition in ("sent", "received_bounced"):
                delivered_at = received + rng.uniform(1, 300)
                delivered = stamp(delivered_at)
                if rng.random() < 0.4:
                    read_disposition, read = "read", stamp(delivered_at + rng.uniform(60, 86400))
            sender = rng.randrange(2000)
            recipient = rng.randrange(50000)
            block.append(
                f"{uuid.uuid4()}\t{account}\t{link}\tapi\t{conversation}\t"
                f"sales{sender}@dealer{account}.example\tSales {sender}\t"
                f"customer{recipient}@mail.example\tCustomer {recipient}\t{proxy}\t{proxy_name}\t"
                f"Your quote {recipient}\tThank you for your enquiry about the vehicle.\t"
                f"<html><body><p>Thank you for your enquiry.</p></body></html>\t{{}}\t\t"
                f"{stamp(received)}\t{delivered}\t{disposition}\t{read_disposition}\t{read}\t"
                f"1\t1\t\t\tmail.example{rest}\n"
            )
            if len(block) == 20000:
                copy.write("".join(block))
                block = []
        copy.write("".join(block))


def other_columns() -> tuple[list[str], str]:
    """The message columns COPY does not set above, with each field's default as COPY text,
    so a column added later (NOT NULL, with a default in the model) does not break the load."""
    import json

    from django.db import connection

    from tracking.models import Message

    columns, values = [], []
    for field in Message._meta.concrete_fields:
        if field.column in COLUMNS or field.primary_key:
            continue
        value = field.get_db_prep_save(field.get_default(), connection)
        if value is None:
            text = r"\N"
        elif isinstance(value, bool):
            text = "t" if value else "f"
        elif isinstance(value, dict | list):
            text = json.dumps(value)
        elif hasattr(value, "obj"):  # psycopg's Json wrapper
            text = json.dumps(value.obj)
        else:
            text = str(value)
        columns.append(field.column)
        values.append(text)
    return columns, "".join(f"\t{v}" for v in values)


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# --- Server --------------------------------------------------------------------------------


def start_gunicorn(port: int, url: str) -> subprocess.Popen:
    import requests

    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "0", "LOG_LEVEL": "WARNING"}
    env["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/gunicorn"), "iovox_email.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--timeout", "120"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/livez", timeout=1).ok:
                return server
        except requests.ConnectionError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not start")


def worker_memory(server: subprocess.Popen) -> tuple[int, int]:
    """(current RSS, peak RSS) of the gunicorn worker, in MB."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    status = Path(f"/proc/{children[0]}/status").read_text()
    kb = {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", status, re.M)}
    return kb["VmRSS"] // 1024, kb["VmHWM"] // 1024


# --- Cases ---------------------------------------------------------------------------------


def cases() -> list[tuple[str, dict[str, str], bool]]:
    """(name, parameters, small page?) for the largest account."""
    from tracking.models import Account, Message

    now = datetime.now(UTC)
    month_end = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month_start = (month_end - timedelta(days=1)).replace(day=1)
    last_month = {
        "start_date": f"{month_start:%Y-%m-%d %H:%M:%S}",
        "end_date": f"{month_end - timedelta(seconds=1):%Y-%m-%d %H:%M:%S}",
    }
    quarter = {**last_month, "start_date": f"{month_start - timedelta(days=61):%Y-%m-01}"}
    year = {"start_date": f"{now - timedelta(days=366):%Y-%m-%d}"}
    account = Account.objects.get(name=USERNAME)
    messages = Message.objects.filter(account=account)
    conversation = Counter(
        messages.filter(conversation_id__isnull=False)
        .values_list("conversation_id", flat=True)
        .order_by("-receive_date")[:5000]
    ).most_common(1)[0][0]
    recipient = messages.order_by("-receive_date").values_list("recipient_address", flat=True)[0]
    return [
        ("link + month", {**last_month, "link_id": "L0", "limit": "100"}, True),
        ("node + month", {**last_month, "node_id": "N0", "limit": "100"}, True),
        ("conversation (year)", {**year, "conversation_id": str(conversation),
                                 "limit": "100"}, True),
        ("recipient (year)", {**year, "recipient_address": recipient, "limit": "100"}, True),
        ("disposition + order", {**last_month, "disposition": "undeliverable",
                                 "order": "receive_date_DESC", "limit": "100"}, True),
        ("disposition + sort by sender", {**last_month, "disposition": "queued",
                                          "order": "sender_address_ASC", "limit": "100"}, True),
        ("deep page (500 of quarter)", {**quarter, "page": "500", "limit": "100"}, True),
        ("whole year, page of 100", {**year, "limit": "100"}, True),
        ("default query, limit 20000", {}, False),
    ]  # fmt: skip


def captured_sql(params: dict[str, str]) -> list[str]:
    """The SQL the view runs for these parameters (the page, and the count if it needs it),
    as executed."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tracking.models import Account
    from tracking.search import search_parse, search_results

    account = Account.objects.get(name=USERNAME)
    query = search_parse(params)
    with CaptureQueriesContext(connection) as captured:
        _, rows = search_results(account=account, query=query)
        for _ in rows:
            pass
    # The page runs as a server-side cursor (in a transaction): run its SELECT itself.
    statements = [
        re.sub(r"^DECLARE .*? CURSOR (WITH(OUT)? HOLD )?FOR ", "", q["sql"])
        for q in captured.captured_queries
    ]
    return [sql for sql in statements if sql.startswith("SELECT")]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def run_cases(args: argparse.Namespace, server: subprocess.Popen) -> None:
    import psycopg
    import requests

    base = f"http://127.0.0.1:{args.port}"
    session = requests.Session()
    session.headers.update({"username": USERNAME, "secureKey": SECURE_KEY})
    sql = psycopg.connect(f"host=127.0.0.1 user=postgres dbname={args.database}", autocommit=True)

    healthz = []
    for _ in range(args.requests + 3):
        t = time.perf_counter()
        session.get(f"{base}/livez").raise_for_status()
        healthz.append((time.perf_counter() - t) * 1000)
    healthz = healthz[3:]
    rss_before = worker_memory(server)
    print(
        f"baseline /livez: p50 {statistics.median(healthz):.1f} ms, "
        f"p95 {percentile(healthz, 0.95):.1f} ms; worker RSS {rss_before[0]} MB"
    )
    header = (f"{'case':32} {'rows':>6} {'total':>8} {'API p50':>8} {'API p95':>8} "
              f"{'SQL p50':>8} {'SQL p95':>8} {'ratio':>6} {'extra':>6} "
              f"{'peak RSS':>9}")  # fmt: skip
    print(header + "\n" + "-" * len(header))
    for name, params, small in cases():
        statements = captured_sql(params)
        if args.explain:
            for statement in statements:
                plan = sql.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement).fetchall()
                print("\n".join(line for (line,) in plan))
        runs = args.requests if small else max(5, args.requests // 3)
        api, direct = [], []
        for i in range(runs + 2):
            t = time.perf_counter()
            # The whole body is read before get() returns; parsing it is the client's cost.
            response = session.get(f"{base}/rest/v1/email/search", params=params)
            api_ms = (time.perf_counter() - t) * 1000
            page = response.json()
            assert response.status_code == 200, page
            t = time.perf_counter()
            for statement in statements:
                sql.execute(statement).fetchall()
            sql_ms = (time.perf_counter() - t) * 1000
            if i >= 2:  # two warm-up rounds
                api.append(api_ms)
                direct.append(sql_ms)
        peak = worker_memory(server)[1]
        ratio = statistics.median(api) / statistics.median(direct)
        extra = statistics.median(api) - statistics.median(direct) - statistics.median(healthz)
        print(f"{name:32} {len(page['results']):>6} {page['total_results']:>8} "
              f"{statistics.median(api):>8.1f} {percentile(api, 0.95):>8.1f} "
              f"{statistics.median(direct):>8.1f} {percentile(direct, 0.95):>8.1f} "
              f"{ratio:>6.2f} {extra:>6.1f} {peak:>6} MB")  # fmt: skip
    print("times in ms; SQL = the view's own SQL (page, and count when needed) run directly "
          "with psycopg;\nratio = API p50 / SQL p50; extra = API p50 - SQL p50 - /livez p50 "
          "(the view's own cost)")  # fmt: skip


if __name__ == "__main__":
    main()
