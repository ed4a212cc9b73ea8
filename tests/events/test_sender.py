"""The sender against real HTTP receivers on loopback: signatures, retries on the schedule,
failure after the last attempt, disabling, a hanging endpoint, DNS checked at send time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.db import transaction
from django.utils import timezone

from tests.factories import AccountFactory, MessageFactory
from tests.worker import webhooks_send_due
from tracking.events import EventDraft, events_emit
from tracking.models import Event, WebhookDelivery, WebhookEndpoint
from tracking.webhooks.sender import WebhookSender
from tracking.webhooks.services import webhook_create, webhook_update

pytestmark = pytest.mark.django_db


def emit(message, event_type="email.sent", **extra):
    with transaction.atomic():
        return events_emit([EventDraft(message.account_id, event_type, message.pk, extra)])


def test_an_event_is_posted_signed_with_the_message_as_the_api_shows_it(alice, receiver):
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    assert emit(message, smtp_code=250, smtp_text="ok") == 1
    webhooks_send_due()
    (payload,) = receiver.verified(endpoint.secret)
    assert payload["type"] == "email.sent"
    event = Event.objects.get()
    assert payload["id"] == event.public_id == receiver.posts[0].headers["webhook-id"]
    assert payload["created_date"] == event.created_at.strftime("%Y-%m-%d %H:%M:%S")
    api = alice.client.get(f"/rest/v1/email/{message.message_id}").json()
    # The detail without its attempts and its page of events (event_counts stay).
    for name in ("attempts", "events", "events_current_page", "events_total_pages"):
        del api[name]
    del api["events_total_results"]
    assert payload["data"] == {**api, "smtp_code": 250, "smtp_text": "ok"}


def test_nothing_is_written_without_an_endpoint_that_wants_it(alice, receiver):
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    assert emit(message) == 0
    webhook_create(account=alice.account, url=receiver.url, events=["email.opened"])
    assert emit(message, "email.sent") == 0
    assert emit(message, "email.opened") == 1
    other = MessageFactory()  # another account's
    assert emit(other) == 0


def test_a_rolled_back_change_produces_no_event(alice, receiver):
    webhook_create(account=alice.account, url=receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    with pytest.raises(RuntimeError), transaction.atomic():
        events_emit([EventDraft(message.account_id, "email.sent", message.pk)])
        raise RuntimeError("the change fails")
    assert not Event.objects.exists()
    webhooks_send_due()
    assert receiver.posts == []


def test_a_500_is_retried_on_the_schedule_with_the_same_id(alice, flaky_receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [30, 60]
    endpoint = webhook_create(account=alice.account, url=flaky_receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    emit(message)
    before = timezone.now()
    webhooks_send_due()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == (
        "pending",
        1,
        500,
    )
    assert (
        before + timedelta(seconds=29)
        <= delivery.next_attempt_at
        <= timezone.now() + timedelta(seconds=31)
    )
    webhooks_send_due()  # not due yet
    assert len(flaky_receiver.posts) == 1
    with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1)):
        webhooks_send_due()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempt_count, delivery.last_status_code) == (
        "delivered",
        2,
        200,
    )
    ids = {p.headers["webhook-id"] for p in flaky_receiver.posts}
    assert len(ids) == 1 and len(flaky_receiver.posts) == 2
    flaky_receiver.verified(endpoint.secret)  # both posts signed


def test_a_delivery_fails_after_the_last_attempt_and_the_endpoint_is_disabled(
    alice, hanging_receiver, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = [10]
    settings.WEBHOOK_DISABLE_AFTER = 15
    settings.WEBHOOK_TIMEOUT = 0.3
    endpoint = webhook_create(account=alice.account, url=hanging_receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    emit(message)
    emit(message, "email.queued")
    start = timezone.now()
    webhooks_send_due()
    first, second = WebhookDelivery.objects.order_by("pk")
    assert first.attempt_count == 1 and first.status == "pending"
    assert first.last_error == "no answer within 0.3 s" and first.last_status_code is None
    # The batch stopped at the timeout: the second waits for the first's retry, untried.
    assert second.attempt_count == 0 and second.next_attempt_at == first.next_attempt_at
    assert len(hanging_receiver.posts) == 1
    with time_machine.travel(start + timedelta(seconds=20)):
        webhooks_send_due()
    first.refresh_from_db()
    assert first.status == "failed" and first.attempt_count == 2
    endpoint.refresh_from_db()
    assert endpoint.enabled is False and "failed" in endpoint.disabled_reason
    alice.account.refresh_from_db()
    assert "was disabled" in alice.account.portal_notice
    # Enabling it again clears the notice.
    webhook_update(endpoint=endpoint, enabled=True)
    alice.account.refresh_from_db()
    assert alice.account.portal_notice == ""


def test_a_success_ends_the_failing_streak(alice, flaky_receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [0]
    endpoint = webhook_create(account=alice.account, url=flaky_receiver.url)
    emit(MessageFactory(account=alice.account, link__node__account=alice.account))
    webhooks_send_due()
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None  # 500, then at once 200
    assert WebhookDelivery.objects.get().status == "delivered"


def test_an_address_that_turned_private_is_refused_at_send_time(alice, receiver, settings):
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    emit(MessageFactory(account=alice.account, link__node__account=alice.account))
    settings.WEBHOOK_ALLOW_PRIVATE = False  # as if its DNS now answered 127.0.0.1
    webhooks_send_due()
    assert receiver.posts == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.attempt_count == 1
    assert "loopback" in delivery.last_error
    assert endpoint.pk == delivery.endpoint_id


def test_a_hanging_endpoint_does_not_delay_another(
    alice, bob, receiver, hanging_receiver, settings, transactional_db
):
    """Two endpoints, threads as the worker runs them: the hanging one's batch holds its own
    thread while the other's events are all delivered."""
    settings.WEBHOOK_TIMEOUT = 5.0
    slow = webhook_create(account=bob.account, url=hanging_receiver.url)
    fast = webhook_create(account=alice.account, url=receiver.url)
    for _ in range(3):
        emit(MessageFactory(account=bob.account, link__node__account=bob.account))
    for _ in range(20):
        emit(MessageFactory(account=alice.account, link__node__account=alice.account))
    sender = WebhookSender(connections=2)
    started = time.monotonic()
    try:
        for _ in range(200):  # bounded
            sender.turn(wait=0.05)
            if len(receiver.posts) == 20:
                break
            time.sleep(0.01)
        took = time.monotonic() - started
    finally:
        hanging_receiver.stopping.set()
        sender.close(timeout=10)
    assert len(receiver.posts) == 20
    assert took < 4.0, took  # well inside the hanging endpoint's 5 s timeout
    assert WebhookDelivery.objects.filter(endpoint=fast, status="delivered").count() == 20
    assert WebhookDelivery.objects.filter(endpoint=slow, status="delivered").count() == 0


def test_a_disabled_endpoint_gets_no_new_deliveries(alice, receiver):
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    emit(message)
    webhook_update(endpoint=endpoint, enabled=False)
    webhooks_send_due()
    assert receiver.posts == []
    assert not WebhookDelivery.objects.exists()
    assert Event.objects.get().dispatched


def test_endpoints_of_other_accounts_never_see_an_event(alice, bob, receiver):
    webhook_create(account=bob.account, url=receiver.url)
    webhook_create(account=AccountFactory(), url=receiver.url)
    emit(MessageFactory(account=alice.account, link__node__account=alice.account))
    webhooks_send_due()
    assert receiver.posts == []
    assert WebhookEndpoint.objects.count() == 2


def test_old_finished_events_are_purged_and_pending_ones_kept(alice, receiver, flaky_receiver):
    from tracking.webhooks.sender import events_purge

    webhook_create(account=alice.account, url=receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    emit(message)
    webhooks_send_due()
    webhook_create(account=alice.account, url=flaky_receiver.url, events=["email.queued"])
    emit(message, "email.queued")
    webhooks_send_due()  # the flaky one answers 500: pending
    with time_machine.travel(timezone.now() + timedelta(days=31)):
        assert events_purge() == 1
    assert list(Event.objects.values_list("type", flat=True)) == ["email.queued"]
    assert WebhookDelivery.objects.filter(status="pending").count() == 1
