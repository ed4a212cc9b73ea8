"""Benchmark: Communication Details on a busy account, against /livez in the same run.

Creates a throw-away test database (of DATABASE_URL's engine, SQLite by default), loads an
account with MESSAGES messages spread over 30 days, then times, through Django's test client:
/livez (the baseline), Communication Details (KPIs + chart + links table), its emails view,
and the CSV export of the whole range. Prints the median of each and its ratio to /livez.

    make bench-portal                  # 20000 messages
    MESSAGES=100000 make bench-portal
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iovox_email.settings")
# As in production: DEBUG off, so templates are parsed once (the cached loader).
os.environ.setdefault("DEBUG", "False")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

# BENCH_SMALL=1: a small account and few rounds, a few seconds in all (CI).
SMALL = os.environ.get("BENCH_SMALL") == "1"
MESSAGES = int(os.environ.get("MESSAGES", "2000" if SMALL else "20000"))
ROUNDS = int(os.environ.get("ROUNDS", "3" if SMALL else "15"))


def seed() -> Client:
    from tracking.models import Disposition, Message, ReadDisposition
    from tracking.services import directory
    from tracking.services.accounts import account_create

    account, _, user = account_create(username="bench", password="bench-password")
    links = []
    for n in range(10):
        node = directory.node_create(account=account, node_id=f"n{n}", node_name=f"Node {n}")
        for m in range(5):
            links.append(
                directory.link_create(
                    account=account, node=node, link_id=f"l{n}-{m}", link_name=f"Link {n}.{m}"
                )
            )
    rng = random.Random(1)
    now = timezone.now()
    statuses = [Disposition.SENT] * 8 + [Disposition.RECEIVED_BOUNCED, Disposition.QUEUED]
    batch = []
    for i in range(MESSAGES):
        received = now - timedelta(days=rng.uniform(0, 29.5))
        status = rng.choice(statuses)
        read = status == Disposition.SENT and rng.random() < 0.4
        batch.append(
            Message(
                account=account,
                link=rng.choice(links),
                sender_address="shop@bench.example",
                recipient_address=f"c{i % 997}@example.net",
                subject=f"Order {i}",
                receive_date=received,
                delivery_date=received + timedelta(seconds=5) if status != "queued" else None,
                disposition=status,
                read_disposition=ReadDisposition.READ if read else ReadDisposition.UNREAD,
                read_first_date=received + timedelta(hours=1) if read else None,
            )
        )
    Message.objects.bulk_create(batch, batch_size=2000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # what autovacuum would have done by now
    client = Client()
    client.force_login(user)
    return client


def timed(client: Client, path: str) -> float:
    started = time.perf_counter()
    response = client.get(path)
    if response.streaming:
        for _ in response.streaming_content:
            pass
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, (path, response.status_code)
    return elapsed


def profile(client: Client, paths: dict[str, str]) -> None:
    """PROFILE=1: the time of each SQL query of each page."""
    from django.test.utils import CaptureQueriesContext

    for label, path in paths.items():
        with CaptureQueriesContext(connection) as captured:
            timed(client, path)
        print(label)
        for query in captured.captured_queries:
            print(f"   {float(query['time']) * 1000:8.1f} ms  {query['sql'][:150]}")


def main() -> None:
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        client = seed()
        paths = {
            "/livez (baseline)": "/livez",
            "Communication Details": "/communications/",
            "  emails view, page 1": "/communications/?view=emails",
            "  emails view, sorted by link": "/communications/?view=emails&order=link_name_ASC",
            "  filtered (node + status)": "/communications/?node=n3&status=sent&view=emails",
            f"CSV export ({MESSAGES} rows)": "/communications/export.csv",
        }
        print(f"engine {connection.vendor}, {MESSAGES} messages, median of {ROUNDS} rounds")
        baseline = None
        for label, path in paths.items():
            rounds = ROUNDS if "CSV" not in label else max(3, ROUNDS // 5)
            timed(client, path)  # warm up
            median = statistics.median(timed(client, path) for _ in range(rounds))
            baseline = baseline or median
            print(f"{label:34} {median * 1000:9.2f} ms   x{median / baseline:8.1f}")
        if os.environ.get("PROFILE"):
            profile(client, paths)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
