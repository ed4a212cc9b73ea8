"""Retention: content, messages and tracking events go after their days, in bounded batches,
never a message still waiting for delivery; `manage.py purge --dry-run` says what would go;
the API and the portal say "content no longer kept"."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from conversations.retention import purge_run
from conversations.tasks import purge
from tests.factories import MessageFactory, UserFactory
from tracking.models import Attachment, DeliveryAttempt, Disposition, Message, TrackingEvent

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def retention(settings):
    settings.MESSAGE_CONTENT_RETENTION_DAYS = 90
    settings.MESSAGE_RETENTION_DAYS = 400
    settings.EVENT_RETENTION_DAYS = 180
    settings.PURGE_BATCH_SIZE = 2


def aged(days: float, **fields) -> Message:
    """A message received `days` ago, with an attachment, an attempt and an open."""
    fields.setdefault("disposition", Disposition.SENT)
    fields.setdefault("source_mime", b"Subject: hi\r\n\r\nbody\r\n")
    at = timezone.now() - days * DAY
    message = MessageFactory(receive_date=at, **fields)
    Attachment.objects.create(
        message=message, disposition="attachment", content_type="text/plain", content=b"x"
    )
    DeliveryAttempt.objects.create(message=message, attempted_at=at, outcome=Disposition.SENT)
    TrackingEvent.objects.create(message=message, kind="open", occurred_at=at)
    return message


def test_content_goes_after_its_days_and_the_metadata_stays(alice, retention):
    mine = {"account": alice.account, "link__node__account": alice.account}
    old, fresh = aged(91, **mine), aged(89, **mine)

    counts = purge()

    assert counts["message_contents"] == 1
    old.refresh_from_db()
    assert (old.text_content, old.html_content, old.source_mime) == ("", "", None)
    assert old.content_purged_at is not None
    assert not Attachment.objects.filter(message=old).exists()
    assert (old.subject, old.disposition, old.recipient_address) != ("", "", "")
    assert old.attempts.count() == 1
    fresh.refresh_from_db()
    assert fresh.content_purged_at is None and fresh.text_content
    # The API and the portal say so, rather than failing.
    detail = alice.client.get(f"/rest/v1/email/{old.message_id}").json()
    assert detail["content_kept"] is False and detail["content_purged_at"]
    assert alice.client.get(f"/rest/v1/email/{fresh.message_id}").json()["content_kept"] is True


def test_the_portal_says_content_no_longer_kept(alice, retention, client):
    old = aged(91, account=alice.account, link__node__account=alice.account)
    purge()
    client.force_login(UserFactory(account=alice.account))

    page = client.get(f"/messages/{old.message_id}").content.decode()

    assert "Content no longer kept" in page
    preview = client.get(f"/messages/{old.message_id}/preview")
    assert preview.content == b"Content no longer kept."


def test_messages_go_with_their_attempts_and_events_after_their_days(retention):
    old, kept = aged(401), aged(399)

    counts = purge()

    assert counts["messages"] == 1
    assert list(Message.objects.all()) == [kept]
    assert not DeliveryAttempt.objects.filter(message_id=old.pk).exists()
    assert not TrackingEvent.objects.filter(message_id=old.pk).exists()


def test_tracking_events_go_after_their_days_and_the_counters_stay(retention):
    message = aged(181, open_count=1)

    counts = purge()

    assert counts["tracking_events"] == 1
    assert not TrackingEvent.objects.exists()
    message.refresh_from_db()
    assert message.open_count == 1 and message.content_purged_at is not None


def test_a_message_still_waiting_for_delivery_is_never_touched(retention):
    waiting = [aged(500, disposition=d) for d in (Disposition.RECEIVED, Disposition.QUEUED)]

    purge()

    for message in waiting:
        message.refresh_from_db()
        assert message.content_purged_at is None and message.text_content


def test_a_run_works_in_batches_until_done(retention):
    for _ in range(5):
        aged(401)

    assert purge_run()["messages"] == 5  # batches of 2, 2 and 1
    assert not Message.objects.exists()


def test_a_run_stops_starting_batches_after_its_time(retention):
    for _ in range(5):
        aged(401)

    assert purge_run(run_seconds=0)["messages"] == 0
    assert Message.objects.count() == 5


def test_dry_run_says_what_would_go_and_deletes_nothing(retention):
    aged(401), aged(91), aged(10)
    out = StringIO()

    call_command("purge", "--dry-run", stdout=out)

    assert "would purge 2 message contents" in out.getvalue()
    assert "would purge 1 messages" in out.getvalue()
    assert Message.objects.filter(content_purged_at__isnull=True).count() == 3
    call_command("purge", stdout=out)
    assert "purged 1 messages" in out.getvalue()
    assert Message.objects.count() == 2


def test_the_next_run_of_the_schedule_catches_up_as_time_passes(retention):
    message = aged(80)
    assert purge()["message_contents"] == 0

    with time_machine.travel(timezone.now() + 11 * DAY):
        assert purge()["message_contents"] == 1

    message.refresh_from_db()
    assert message.content_purged_at is not None
