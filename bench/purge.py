"""Benchmark of the purge (docs/operations.md#retention): does it slow sending?

BENCH_ROWS old messages (default 100,000; the issue's figure is BENCH_ROWS=1000000) are stored
for the bench account, received between 500 and 100 days ago in time order, finished (`sent`),
each with its content and an open: every one's content is past MESSAGE_CONTENT_RETENTION_DAYS
(90), a quarter of them past MESSAGE_RETENTION_DAYS (400), and their opens past
EVENT_RETENTION_DAYS (180) for most. Then, through gunicorn (as bench/send.py measures it):

1. accepted sends per second with no purge running;
2. the same while the purge runs (retention's steps, batch after batch of PURGE_BATCH_SIZE,
   as the scheduled `iovox:purge` runs them), in alternating rounds while it lasts;
3. the purge's own figures: rows a second, and its longest batch (the longest it holds any
   row lock).

Run on PostgreSQL: `DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> make bench-purge`.
BENCH_SMALL=1: 5,000 rows and short rounds (CI). Knobs: BENCH_ROWS, BENCH_SECONDS,
BENCH_CLIENTS, BENCH_WEB_WORKERS, BENCH_PORT.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BENCH_PORT", "20130")
from bench import send  # noqa: E402 (the acceptance measurement and the bench account)

SMALL = send.SMALL
ROWS = int(os.environ.get("BENCH_ROWS", "5000" if SMALL else "100000"))
ROUND_SECONDS = float(os.environ.get("BENCH_SECONDS", "1" if SMALL else "3"))
CHUNK = 5000


def seed(account, link) -> None:
    """ROWS finished messages of the bench account, 500 to 100 days old, oldest first, each
    with an open."""
    from django.db import transaction
    from django.utils import timezone

    from tracking.models import Disposition, Message, TrackingEvent

    now = timezone.now()
    span = timedelta(days=400) / ROWS
    started = time.perf_counter()
    for start in range(0, ROWS, CHUNK):
        with transaction.atomic():
            messages = Message.objects.bulk_create(
                [
                    Message(
                        account=account,
                        link=link,
                        sender_address="bob.bob@iovox.com",
                        recipient_address=f"old{n}@{send.DOMAIN}",
                        recipient_domain=send.DOMAIN,
                        subject="An old message",
                        text_content="This is plain text. " * 10,
                        html_content="<p>This is HTML</p>" * 10,
                        receive_date=now - timedelta(days=500) + n * span,
                        delivery_date=now - timedelta(days=500) + n * span,
                        disposition=Disposition.SENT,
                        next_attempt_at=None,
                        open_count=1,
                    )
                    for n in range(start, min(ROWS, start + CHUNK))
                ]
            )
            TrackingEvent.objects.bulk_create(
                TrackingEvent(message=m, kind="open", occurred_at=m.receive_date) for m in messages
            )
    print(f"  seeded {ROWS} messages and opens in {time.perf_counter() - started:.0f} s")
    vacuum()


def delete_all(account) -> None:
    """Every message of the bench account, a chunk at a time (one DELETE of them all would
    pass more parameters than PostgreSQL takes)."""
    from tracking.models import Message

    mine = Message.objects.filter(account=account)
    for _ in range(10 * ROWS // CHUNK + 10):  # bounded
        pks = list(mine.values_list("pk", flat=True)[:CHUNK])
        if not pks:
            break
        Message.objects.filter(pk__in=pks).delete()
    send.cleanup(account)


def vacuum() -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for table in ("tracking_message", "tracking_trackingevent", "tracking_attachment"):
                cursor.execute(f"VACUUM ANALYZE {table}")


class Purge(threading.Thread):
    """Retention's steps, batch after batch, as `iovox:purge` runs them, each batch timed."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.rows = 0
        self.batches: list[float] = []
        self.seconds = 0.0

    def run(self) -> None:
        from django.conf import settings
        from django.db import connection
        from django.utils import timezone

        from tracking.services.retention import STEPS, Cutoffs

        cutoffs, batch = Cutoffs.at(timezone.now()), settings.PURGE_BATCH_SIZE
        started = time.perf_counter()
        try:
            for step, cutoff in STEPS.values():
                for _ in range(10 * ROWS // batch + 10):  # bounded
                    begun = time.perf_counter()
                    done = step(before=cutoff(cutoffs), batch=batch)
                    self.batches.append(time.perf_counter() - begun)
                    self.rows += done
                    if done < batch:
                        break
        finally:
            self.seconds = time.perf_counter() - started
            connection.close()


def main() -> None:
    account, link = send.setup()
    from django.conf import settings

    from tracking.models import Message

    db = settings.DATABASES["default"]
    engine = db["ENGINE"].rsplit(".", 1)[-1]
    database_url = send.bench_database_url()
    print(f"database: {engine} {db['NAME']}; {os.cpu_count()} cores; {ROWS} old messages")
    delete_all(account)
    seed(account, link)
    web = send.spawn(
        [sys.executable, "-m", "gunicorn", "iovox_email.wsgi", "-b", f"127.0.0.1:{send.PORT}"]
        + ["-w", str(send.WEB_WORKERS), "--keep-alive", "30", "--log-level", "warning"],
        env={"DATABASE_URL": database_url, "DEBUG": "False", "LOG_LEVEL": "WARNING"},
    )
    try:
        send.wait_for_port(send.PORT)
        send.rate("POST", "/rest/v1/email", send.SEND_BODY, 201, 1)  # warm up
        quiet, _ = send.rate("POST", "/rest/v1/email", send.SEND_BODY, 201, ROUND_SECONDS)
        purge = Purge()
        purge.start()
        during: list[float] = []
        for _ in range(1000):  # bounded: as long as the purge lasts
            if not purge.is_alive():
                break
            during.append(
                send.rate("POST", "/rest/v1/email", send.SEND_BODY, 201, ROUND_SECONDS)[0]
            )
        purge.join(timeout=3600)
        after, _ = send.rate("POST", "/rest/v1/email", send.SEND_BODY, 201, ROUND_SECONDS)
    finally:
        send.stop(web)
        left = Message.objects.filter(account=account, subject="An old message").count()
        delete_all(account)
    baseline = (quiet + after) / 2
    with_purge = sum(during) / len(during) if during else float("nan")
    batches = sorted(purge.batches)
    print(
        f"sends/s: {baseline:7.0f} with no purge (before {quiet:.0f}, after {after:.0f}), "
        f"{with_purge:7.0f} while the purge ran ({len(during)} rounds of {ROUND_SECONDS:g} s): "
        f"ratio {with_purge / baseline:6.1%}\n"
        f"purge: {purge.rows} rows in {purge.seconds:.1f} s ({purge.rows / purge.seconds:.0f} "
        f"rows/s), {len(batches)} batches of {settings.PURGE_BATCH_SIZE}: median "
        f"{batches[len(batches) // 2] * 1000:.0f} ms, longest {batches[-1] * 1000:.0f} ms; "
        f"{left} old messages left (their content purged; under 400 days old)"
    )


if __name__ == "__main__":
    main()
