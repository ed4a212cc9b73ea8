"""A message counts every open, click and bounce but keeps only its first and most recent
events, so thousands of pixel hits cannot make its rows, its API detail or its portal page
grow without bound; the kept events are listed a page at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import time_machine
from django.test import Client, override_settings

from tests.factories import MessageFactory, UserFactory
from tests.mailservers import free_port
from tests.tracking.test_tracking_end_to_end import wait_for
from tests.worker import ROOT, database_url
from tracking.delivery.verp import verp_address
from tracking.engagement import recorder, tokens
from tracking.models import Message, TrackingEvent
from tracking.services.bounces import bounce_process

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)
APPLE_PROXY = "Mozilla/5.0"  # Apple Mail Privacy Protection's prefetch
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
BASE = "http://testserver"


@pytest.fixture
def batched(settings, monkeypatch):
    """Hits go through the web process's buffer in batches of 500, as in production (no timer
    thread: it would write from a connection that cannot see this test's message)."""
    settings.TRACKING_BASE_URL = BASE
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 3600
    settings.TRACKING_EVENT_BATCH = 500
    monkeypatch.setattr(recorder._buffer, "_start", lambda: None)
    recorder.tracking_events_flush()


@pytest.fixture
def flooded(alice, batched):
    """4,334 pixel hits (a person's first, then a proxy's loop) and 20 clicks on one message."""
    message = MessageFactory(
        account=alice.account, link__node__account=alice.account, delivery_date=T0
    )
    pixel = tokens.open_url(message.message_id).removeprefix(BASE)
    person, proxy = Client(HTTP_USER_AGENT=CHROME), Client(HTTP_USER_AGENT=APPLE_PROXY)
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        person.get(pixel)
        for _ in range(4333):
            proxy.get(pixel)
    for n in range(20):  # a person's pace: no burst that would look like a link scanner
        with time_machine.travel(T0 + timedelta(minutes=10, seconds=2 * n), tick=False):
            person.get(
                tokens.click_url(message.message_id, f"https://shop.example/{n}")[len(BASE) :]
            )
    recorder.tracking_events_flush()
    message.refresh_from_db()
    return message


def test_thousands_of_hits_keep_exact_counters_and_only_the_first_and_last_100_events(
    flooded,
):
    message = flooded
    assert (message.open_count, message.open_automated_count) == (4334, 4333)
    assert (message.click_count, message.click_automated_count) == (20, 0)
    kept = list(message.events.order_by("occurred_at", "pk"))
    assert len(kept) == 200
    assert kept[0].user_agent == CHROME and not kept[0].automated  # the person's first open
    assert {e.kind for e in kept[:100]} == {"open"}
    # The most recent 100: the end of the proxy's loop, then the 20 clicks.
    assert [e.kind for e in kept[100:]] == ["open"] * 80 + ["click"] * 20
    assert kept[-1].url == "https://shop.example/19"


def test_the_api_detail_stays_small_and_pages_its_events(alice, flooded):
    response = alice.client.get(f"/rest/v1/email/{flooded.message_id}")
    assert response.status_code == 200
    assert len(response.content) < 30_000  # 20 KB; it was 629 KB
    detail = response.json()
    assert detail["event_counts"] == {
        "opens": 4334,
        "opens_human": 1,
        "opens_automated": 4333,
        "clicks": 20,
        "clicks_human": 20,
        "clicks_automated": 0,
        "bounces": 0,
    }
    assert len(detail["events"]) == 100
    assert (detail["events_current_page"], detail["events_total_pages"]) == (1, 2)
    assert detail["events_total_results"] == 200

    second = alice.client.get(f"/rest/v1/email/{flooded.message_id}?page=2&limit=80").json()
    assert [e["kind"] for e in second["events"]] == ["open"] * 80
    assert second["events_current_page"] == 2 and second["events_total_pages"] == 3
    last = alice.client.get(f"/rest/v1/email/{flooded.message_id}?page=3&limit=80").json()
    assert len(last["events"]) == 40 and last["events"][-1]["url"] == "https://shop.example/19"
    beyond = alice.client.get(f"/rest/v1/email/{flooded.message_id}?page=9").json()
    assert beyond["events"] == [] and beyond["events_total_results"] == 200


@pytest.mark.parametrize(
    "query, error",
    [
        ("page=0", "page: ensure this value is greater than or equal to 1"),
        ("page=x", "page: a valid integer is required"),
        ("limit=1001", "limit: ensure this value is less than or equal to 1000"),
        ("limit=-1", "limit: ensure this value is greater than or equal to 1"),
    ],
)
def test_bad_event_paging_is_a_400(alice, query, error):
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    response = alice.client.get(f"/rest/v1/email/{message.message_id}?{query}")
    assert response.status_code == 400
    assert response.json() == {"errors": [error]}


def test_the_portal_page_stays_small_and_pages_its_timeline(alice, flooded, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    portal = Client()
    portal.force_login(UserFactory(account=alice.account))
    url = f"/messages/{flooded.message_id}"

    first = portal.get(url)
    assert len(first.content) < 50_000  # 25 KB; it was 1.5 MB
    page = first.content.decode()
    assert 'data-count="opens">4334 ' in page and "1 human, 4333 automated" in page
    assert "4354 opens, clicks and bounces were counted" in page
    assert "Page 1 of 4" in page
    assert sum(step.kind in ("open", "click") for step in first.context["timeline"]) == 50

    last = portal.get(f"{url}?page=4")
    steps = [step for step in last.context["timeline"] if step.kind in ("open", "click")]
    assert len(steps) == 50 and steps[-1].detail == "https://shop.example/19"
    assert "Page 4 of 4" in last.content.decode()


@pytest.mark.django_db
def test_bounces_are_counted_and_bounded_too(settings):
    settings.TRACKING_EVENTS_KEPT_FIRST = settings.TRACKING_EVENTS_KEPT_LAST = 2
    message = MessageFactory(disposition="sent")
    raw = (Path(__file__).parent.parent / "fixtures" / "mail" / "plain_bounce.eml").read_bytes()
    for n in range(7):
        with time_machine.travel(T0 + timedelta(minutes=n), tick=False):
            bounce_process(raw=raw, rcpt_to=verp_address(message))
    message.refresh_from_db()
    assert message.bounce_count == 7
    times = list(message.events.values_list("occurred_at", flat=True))
    assert times == [T0 + timedelta(minutes=n) for n in (0, 1, 5, 6)]


@pytest.mark.django_db
@pytest.mark.parametrize("first, last, kept", [(0, 3, [7, 8, 9]), (3, 0, [0, 1, 2])])
def test_either_end_of_the_bound_may_be_zero(settings, first, last, kept):
    settings.TRACKING_EVENTS_KEPT_FIRST, settings.TRACKING_EVENTS_KEPT_LAST = first, last
    message = MessageFactory()
    for batch in ((0, 1, 2, 3), (4, 5, 6, 7, 8, 9)):
        recorder.tracking_events_write(
            hits=[
                recorder.Hit(
                    "open", message.message_id, T0 + timedelta(seconds=n), "GET", None, CHROME
                )
                for n in batch
            ]
        )
    message.refresh_from_db()
    assert message.open_count == 10
    stored = message.events.values_list("occurred_at", flat=True)
    assert list(stored) == [T0 + timedelta(seconds=n) for n in kept]


@pytest.mark.django_db(transaction=True)
def test_concurrent_hits_on_two_gunicorn_workers_count_exactly_and_stay_bounded(tmp_path):
    """Two web processes write batches of one message at once: every hit is counted once,
    and the message keeps its first 5 and last 5 events."""
    message = MessageFactory()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "TRACKING_BASE_URL": f"http://127.0.0.1:{port}",
        "TRACKING_EVENT_FLUSH_INTERVAL": "0.02",
        "TRACKING_EVENTS_KEPT_FIRST": "5",
        "TRACKING_EVENTS_KEPT_LAST": "5",
        "LOG_LEVEL": "WARNING",
    }
    log = (tmp_path / "gunicorn.log").open("w+")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "iovox_email.wsgi", "--workers=2",
         "--threads=4", f"--bind=127.0.0.1:{port}", "--log-level=warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    threads_count, hits_each = 8, 60
    try:
        with override_settings(TRACKING_BASE_URL=f"http://127.0.0.1:{port}"):
            pixel = tokens.open_url(message.message_id)
        wait_for(f"http://127.0.0.1:{port}/healthz", server, log)
        failures: list[int] = []

        def hit() -> None:
            with requests.Session() as session:
                for _ in range(hits_each):
                    status = session.get(pixel, headers={"User-Agent": CHROME}, timeout=30)
                    if status.status_code != 200:
                        failures.append(status.status_code)

        threads = [threading.Thread(target=hit) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    log.seek(0)
    assert "Traceback" not in log.read()
    message = Message.objects.get(pk=message.pk)
    assert message.open_count == threads_count * hits_each
    assert TrackingEvent.objects.filter(message=message).count() == 10
