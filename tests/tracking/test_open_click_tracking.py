from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import DatabaseError, connection
from django.test import Client, override_settings

from tests.factories import MessageFactory
from tests.mailservers import free_port
from tracking.engagement import recorder, tokens
from tracking.engagement.events import event_fields
from tracking.engagement.views import PIXEL_GIF
from tracking.models import Message, ReadDisposition, TrackingEvent

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def tracking_base(settings):
    settings.TRACKING_BASE_URL = "http://testserver"


@pytest.fixture
def reader() -> Client:
    return Client(HTTP_USER_AGENT=CHROME, REMOTE_ADDR="203.0.113.7")


def pixel_path(message_id) -> str:
    return tokens.open_url(message_id).removeprefix("http://testserver")


def click_path(message_id, url: str) -> str:
    return tokens.click_url(message_id, url).removeprefix("http://testserver")


# --- tokens ---------------------------------------------------------------------------------


def test_tokens_name_the_message_and_the_url_they_were_signed_for():
    message_id = uuid.uuid4()
    assert tokens.open_token_message_id(tokens.open_token(message_id)) == message_id
    long_url = "https://shop.example/spring?" + "&".join(f"utm_{i}=campaign" for i in range(40))
    for url in ["https://x.example/", "https://x.example/ünïcode?q=a b#frag", long_url]:
        target = tokens.click_token_target(tokens.click_token(message_id, url))
        assert target == tokens.ClickTarget(message_id=message_id, url=url)
    assert len(tokens.click_token(message_id, long_url)) < len(long_url)


def tampered_tokens(token: str) -> list[str]:
    payload, signature = token.split(".")
    flipped = "A" if payload[3] != "A" else "B"
    return [
        payload[:3] + flipped + payload[4:] + "." + signature,
        payload + "." + signature[:-1] + ("A" if signature[-1] != "A" else "B"),
        token[:-5],
        payload,
        "." + signature,
        "not-a-token",
        "",
    ]


def test_a_tampered_or_truncated_pixel_token_is_404(reader, db):
    message = MessageFactory()
    for bad in tampered_tokens(tokens.open_token(message.message_id)):
        assert reader.get(f"/t/o/{bad}.gif").status_code == 404, bad
    assert not TrackingEvent.objects.exists()
    assert Message.objects.get().read_disposition == ReadDisposition.UNREAD


def test_a_tampered_click_token_is_404_and_never_redirects(reader, db):
    message = MessageFactory()
    token = tokens.click_token(message.message_id, "https://shop.example/")
    for bad in tampered_tokens(token):
        response = reader.get(f"/t/c/{bad}")
        assert response.status_code == 404, bad
        assert "Location" not in response
    assert not TrackingEvent.objects.exists()


def test_a_pixel_token_is_not_a_click_token_nor_the_other_way_round(reader, db):
    message = MessageFactory()
    assert reader.get(f"/t/c/{tokens.open_token(message.message_id)}").status_code == 404
    click = tokens.click_token(message.message_id, "https://shop.example/")
    assert reader.get(f"/t/o/{click}.gif").status_code == 404


def test_a_token_signed_with_another_secret_key_is_404(reader, db):
    message = MessageFactory()
    with override_settings(SECRET_KEY="another-installation-" + "x" * 40):
        foreign_click = tokens.click_token(message.message_id, "https://evil.example/")
        foreign_pixel = tokens.open_token(message.message_id)
    assert reader.get(f"/t/c/{foreign_click}").status_code == 404
    assert reader.get(f"/t/o/{foreign_pixel}.gif").status_code == 404


def test_a_token_signed_with_a_retired_key_still_works_after_key_rotation(reader, db, settings):
    message = MessageFactory()
    old_click = click_path(message.message_id, "https://shop.example/")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "rotated-" + "y" * 50
    assert reader.get(old_click)["Location"] == "https://shop.example/"


# --- endpoints ------------------------------------------------------------------------------


def test_the_pixel_is_a_constant_gif_that_no_cache_may_keep(reader, db):
    message = MessageFactory()
    response = reader.get(pixel_path(message.message_id))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert response.content == PIXEL_GIF and PIXEL_GIF.startswith(b"GIF89a\x01\x00\x01\x00")
    assert response["Content-Length"] == str(len(PIXEL_GIF))
    assert "no-store" in response["Cache-Control"] and "no-cache" in response["Cache-Control"]
    assert response["Pragma"] == "no-cache"
    assert response["Expires"] == "Thu, 01 Jan 1970 00:00:00 GMT"


def test_a_click_redirects_to_exactly_the_original_url(reader, db):
    message = MessageFactory()
    url = "https://shop.example/spring?utm_source=mail&utm_medium=email&x=%2F#offers"
    response = reader.get(click_path(message.message_id, url))
    assert response.status_code == 302
    assert response["Location"] == url
    assert "no-store" in response["Cache-Control"]


def test_the_first_open_marks_the_message_read_and_later_hits_keep_the_first_date(reader, db):
    message = MessageFactory()
    first = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    with time_machine.travel(first, tick=False):
        reader.get(pixel_path(message.message_id))
    with time_machine.travel(first + timedelta(hours=2), tick=False):
        reader.get(pixel_path(message.message_id))
        reader.get(click_path(message.message_id, "https://shop.example/"))
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ
    assert message.read_first_date == first
    events = list(message.events.values_list("kind", "occurred_at", "ip", "user_agent", "url"))
    assert events == [
        ("open", first, "203.0.113.7", CHROME, ""),
        ("open", first + timedelta(hours=2), "203.0.113.7", CHROME, ""),
        ("click", first + timedelta(hours=2), "203.0.113.7", CHROME, "https://shop.example/"),
    ]


def test_a_click_alone_marks_the_message_read(reader, db):
    message = MessageFactory()
    reader.get(click_path(message.message_id, "https://shop.example/"))
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ and message.read_first_date


def test_an_automated_open_still_marks_read_but_says_it_was_a_machine(db):
    message = MessageFactory()
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    Client(HTTP_USER_AGENT=gmail).get(pixel_path(message.message_id))
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ
    event = message.events.get()
    assert event.automated and event.automated_reason.startswith("Gmail image proxy")


def test_an_unknown_or_deleted_message_gets_the_gif_or_redirect_and_nothing_is_written(reader, db):
    deleted = MessageFactory()
    pixel, click = (
        pixel_path(deleted.message_id),
        click_path(deleted.message_id, "https://shop.example/"),
    )
    deleted.delete()
    for path in [pixel, pixel_path(uuid.uuid4())]:
        response = reader.get(path)
        assert response.status_code == 200 and response.content == PIXEL_GIF
    assert reader.get(click)["Location"] == "https://shop.example/"
    assert not TrackingEvent.objects.exists()


def test_head_requests_are_answered_and_recorded_as_automated(db):
    message = MessageFactory()
    client = Client(HTTP_USER_AGENT=CHROME)
    head_pixel = client.head(pixel_path(message.message_id))
    assert head_pixel.status_code == 200 and head_pixel.content == b""
    assert head_pixel["Content-Type"] == "image/gif"
    head_click = client.head(click_path(message.message_id, "https://shop.example/"))
    assert head_click.status_code == 302 and head_click["Location"] == "https://shop.example/"
    reasons = list(message.events.values_list("automated", "automated_reason"))
    assert reasons == [(True, "HEAD request (link checker)")] * 2


def test_other_methods_are_refused(reader, db):
    message = MessageFactory()
    assert reader.post(pixel_path(message.message_id)).status_code == 405
    assert reader.post(click_path(message.message_id, "https://x.example/")).status_code == 405
    assert not TrackingEvent.objects.exists()


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(db):
    message = MessageFactory()
    path = pixel_path(message.message_id)
    forged = "198.51.100.1, 192.0.2.9"
    Client(REMOTE_ADDR="203.0.113.7", HTTP_X_FORWARDED_FOR=forged, HTTP_USER_AGENT=CHROME).get(path)
    # From our own proxy (loopback): the rightmost address that is not a trusted proxy.
    Client(
        REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"{forged}, 127.0.0.1", HTTP_USER_AGENT=CHROME
    ).get(path)
    Client(REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="junk", HTTP_USER_AGENT=CHROME).get(path)
    assert list(message.events.values_list("ip", flat=True)) == [
        "203.0.113.7",
        "192.0.2.9",
        "127.0.0.1",
    ]


# --- people and machines, in context ---------------------------------------------------------


def test_a_click_seconds_after_delivery_is_a_link_scanner(reader, db):
    delivered = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    message = MessageFactory(delivery_date=delivered)
    with time_machine.travel(delivered + timedelta(seconds=2), tick=False):
        reader.get(click_path(message.message_id, "https://shop.example/"))
    with time_machine.travel(delivered + timedelta(minutes=5), tick=False):
        reader.get(click_path(message.message_id, "https://shop.example/"))
    assert list(message.events.values_list("automated", "automated_reason")) == [
        (True, "clicked 2 s after delivery (link scanner)"),
        (False, ""),
    ]


def test_every_link_clicked_within_a_second_is_a_link_scanner(reader, db):
    message = MessageFactory()
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    for i in range(4):
        with time_machine.travel(start + timedelta(milliseconds=200 * i), tick=False):
            reader.get(click_path(message.message_id, f"https://shop.example/{i}"))
    with time_machine.travel(start + timedelta(minutes=1), tick=False):
        reader.get(click_path(message.message_id, "https://shop.example/later"))
    flags = list(message.events.values_list("automated", flat=True))
    # The first two are already stored when the third shows the burst; from there on, all.
    assert flags == [False, False, True, True, False]


def test_buffered_clicks_of_one_batch_are_all_flagged_as_a_burst(db):
    message = MessageFactory()
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    hits = [
        recorder.Hit(
            kind="click",
            message_id=message.message_id,
            occurred_at=start + timedelta(milliseconds=100 * i),
            method="GET",
            ip="203.0.113.7",
            user_agent=CHROME,
            url=f"https://shop.example/{i}",
        )
        for i in range(3)
    ]
    assert recorder.tracking_events_write(hits=hits) == 3
    assert (
        list(message.events.values_list("automated_reason", flat=True))
        == ["3 clicks within a second (link scanner)"] * 3
    )


def test_the_message_events_show_each_classification(reader, db):
    message = MessageFactory()
    with time_machine.travel(datetime(2026, 3, 1, 9, 0, 5, tzinfo=UTC), tick=False):
        Client(HTTP_USER_AGENT="Mozilla/5.0", REMOTE_ADDR="17.58.1.2").get(
            pixel_path(message.message_id)
        )
        reader.get(click_path(message.message_id, "https://shop.example/"))
    assert [event_fields(event) for event in message.events.all()] == [
        {
            "kind": "open",
            "occurred_at": "2026-03-01 09:00:05",
            "ip": "17.58.1.2",
            "user_agent": "Mozilla/5.0",
            "automated": True,
            "automated_reason": "Apple Mail Privacy Protection prefetch (Apple's proxy)",
        },
        {
            "kind": "click",
            "occurred_at": "2026-03-01 09:00:05",
            "ip": "203.0.113.7",
            "user_agent": CHROME,
            "url": "https://shop.example/",
            "automated": False,
        },
    ]


# --- the write path -------------------------------------------------------------------------


def test_buffered_hits_are_answered_at_once_and_written_together_at_the_next_flush(
    reader, db, settings, monkeypatch, django_assert_max_num_queries
):
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 3600  # no batch falls due by time here
    # No background thread here: it would write from its own connection, which cannot see
    # this test's uncommitted message (the next test runs the thread for real).
    monkeypatch.setattr(recorder._buffer, "_start", lambda: None)
    recorder.tracking_events_flush()
    message = MessageFactory()
    first = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    with time_machine.travel(first, tick=False):
        assert reader.get(pixel_path(message.message_id)).status_code == 200
    with time_machine.travel(first + timedelta(seconds=30), tick=False):
        assert (
            reader.get(click_path(message.message_id, "https://shop.example/")).status_code == 302
        )
        assert reader.get(pixel_path(uuid.uuid4())).status_code == 200
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.UNREAD
    assert not TrackingEvent.objects.exists()
    # Messages, earlier clicks, their rows locked and counted, one INSERT, one UPDATE of the
    # counters, one marking read (and the test's savepoint); and, once per
    # WEBHOOK_SUBSCRIPTION_CACHE_SECONDS, which events the accounts' webhooks want.
    with django_assert_max_num_queries(9):
        assert recorder.tracking_events_flush() == 2
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ and message.read_first_date == first
    assert list(message.events.values_list("kind", flat=True)) == ["open", "click"]
    assert recorder.tracking_events_flush() == 0


@pytest.mark.django_db(transaction=True)
def test_the_background_thread_writes_buffered_events_within_its_interval(reader, settings):
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 0.05
    message = MessageFactory()
    for _ in range(3):
        reader.get(pixel_path(message.message_id))
    deadline = time.monotonic() + 5
    while TrackingEvent.objects.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert TrackingEvent.objects.filter(message=message).count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_hits_set_the_read_date_once():
    raced, viewed = MessageFactory(), MessageFactory()
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    times = [datetime(2026, 3, 1, 9, 0, i, tzinfo=UTC) for i in range(threads_count)]
    won: dict[int, int] = {}

    def hit(i: int) -> None:
        try:
            barrier.wait(timeout=5)
            won[i] = recorder.messages_mark_read(first_reads={raced.pk: times[i]})
            hit = recorder.Hit("open", raced.message_id, times[i], "GET", None, CHROME)
            recorder.tracking_events_write(hits=[hit])
            # And through the view, from this thread's own connection.
            Client(HTTP_USER_AGENT=CHROME).get(pixel_path(viewed.message_id))
        finally:
            connection.close()

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    winners = [i for i, count in won.items() if count == 1]
    assert len(won) == threads_count and len(winners) == 1
    raced.refresh_from_db()
    assert raced.read_disposition == ReadDisposition.READ
    assert raced.read_first_date == times[winners[0]]
    assert raced.events.count() == threads_count
    viewed.refresh_from_db()
    assert viewed.read_disposition == ReadDisposition.READ and viewed.read_first_date
    assert viewed.events.count() == threads_count


def test_a_full_buffer_drops_its_oldest_hits_and_says_so(reader, db, settings, monkeypatch, caplog):
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 3600  # no batch falls due by time here
    settings.TRACKING_EVENT_BUFFER_MAX = 2
    monkeypatch.setattr(recorder._buffer, "_start", lambda: None)
    recorder.tracking_events_flush()
    message = MessageFactory()
    for n in range(3):
        reader.get(click_path(message.message_id, f"https://shop.example/{n}"))
    assert "tracking-events: buffer full, dropped the 1 oldest items" in caplog.text
    assert recorder.tracking_events_flush() == 2
    assert list(message.events.values_list("url", flat=True)) == [
        "https://shop.example/1",
        "https://shop.example/2",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_database_refuses_is_kept_and_written_on_a_later_try(
    reader, settings, monkeypatch
):
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 3600  # no batch falls due by time here
    monkeypatch.setattr(recorder._buffer, "_start", lambda: None)
    message = MessageFactory()
    reader.get(pixel_path(message.message_id))
    # A real failure: the next connection goes to a port (or a file) where no database is.
    if connection.vendor == "postgresql":
        unreachable = {"PORT": str(free_port())}
    else:
        unreachable = {"NAME": "/nonexistent/directory/iovox.sqlite3"}
    reachable = {key: connection.settings_dict[key] for key in unreachable}
    connection.close()
    connection.settings_dict.update(unreachable)
    try:
        with pytest.raises(DatabaseError):
            recorder.tracking_events_flush()
    finally:
        connection.close()
        connection.settings_dict.update(reachable)
    assert not recorder._buffer.due()  # requests do not each retry while the database is away
    assert recorder.tracking_events_flush() == 1
    assert message.events.count() == 1


def test_the_message_detail_lists_many_events_in_a_fixed_number_of_queries(
    alice, reader, django_assert_max_num_queries
):
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    for n in range(25):
        reader.get(click_path(message.message_id, f"https://shop.example/{n}"))
    with django_assert_max_num_queries(6):
        detail = alice.client.get(f"/rest/v1/email/{message.message_id}").json()
    assert len(detail["events"]) == 25
    assert {event["kind"] for event in detail["events"]} == {"click"}


def test_another_accounts_message_detail_is_not_found(alice, bob):
    message = MessageFactory(account=bob.account, link__node__account=bob.account)
    response = alice.client.get(f"/rest/v1/email/{message.message_id}")
    assert response.status_code == 404
    assert response.json() == {"errors": ["message_id does not exist"]}
