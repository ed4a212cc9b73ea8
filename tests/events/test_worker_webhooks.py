"""Webhooks through the real worker: `manage.py qcluster` in a subprocess, its resident webhook
loop posting to real HTTP receivers on loopback while its delivery loop delivers the mail.
Retries on a short schedule, a failed delivery and a disabled endpoint; times within
generous bounds, by polling the database until a deadline."""

from __future__ import annotations

import pytest

from tests.factories import LinkFactory
from tests.worker import start_worker, stop_worker, wait_until
from tracking.models import WebhookDelivery, WebhookEndpoint
from tracking.webhooks.services import webhook_create

pytestmark = pytest.mark.django_db(transaction=True)

WORKER_SETTINGS = {
    "WEBHOOK_ALLOW_PRIVATE": "1",
    "WEBHOOK_RETRY_SCHEDULE": "1",
    "WEBHOOK_TIMEOUT": "1",
    "WEBHOOK_DISABLE_AFTER": "1",
    "WEBHOOK_SUBSCRIPTION_CACHE_SECONDS": "0",
}


def send(actor, link) -> str:
    response = actor.client.post(
        "/rest/v1/email",
        {
            "link_id": link.link_id, "sender_address": "bob@iovox.com", "sender_name": "Bob",
            "recipient_address": "ann@example.net", "recipient_name": "Ann",
            "subject": "Hello", "text_content": "plain", "html_content": "<p>html</p>",
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 201
    return response.json()["message_id"]


def test_events_are_posted_retried_and_a_dead_endpoint_disabled(
    alice, mail_servers, receiver, flaky_receiver, hanging_receiver
):
    link = LinkFactory(account=alice.account, node__account=alice.account)
    good = webhook_create(account=alice.account, url=receiver.url, events=["email.sent"])
    flaky = webhook_create(account=alice.account, url=flaky_receiver.url, events=["email.sent"])
    dead = webhook_create(account=alice.account, url=hanging_receiver.url, events=["email.sent"])
    worker = start_worker(mail_servers, **WORKER_SETTINGS)
    try:
        message_id = send(alice, link)
        delivered = WebhookDelivery.objects.filter(status="delivered")
        wait_until(lambda: delivered.filter(endpoint=good).exists(), timeout=30)
        # 500, then 200 on the retry a second later.
        wait_until(lambda: delivered.filter(endpoint=flaky).exists(), timeout=30)
        # Two attempts that time out, a second apart: failed after the last, and the endpoint,
        # failing for longer than WEBHOOK_DISABLE_AFTER by then, disabled.
        failed = WebhookDelivery.objects.filter(endpoint=dead, status="failed")
        wait_until(failed.exists, timeout=40)
        wait_until(lambda: not WebhookEndpoint.objects.get(pk=dead.pk).enabled, timeout=30)
    finally:
        hanging_receiver.stopping.set()
        log = stop_worker(worker)
    (payload,) = receiver.verified(good.secret)
    assert payload["type"] == "email.sent" and payload["data"]["message_id"] == message_id
    posts = flaky_receiver.verified(flaky.secret)
    assert [p["id"] for p in posts] == [payload["id"]] * 2, log
    assert [p.status for p in flaky_receiver.posts] == [500, 200]
    flaky_delivery = WebhookDelivery.objects.get(endpoint=flaky)
    assert flaky_delivery.attempt_count == 2
    dead_delivery = WebhookDelivery.objects.get(endpoint=dead)
    assert dead_delivery.attempt_count == 2
    assert dead_delivery.last_error == "no answer within 1 s"
    alice.account.refresh_from_db()
    assert "was disabled" in alice.account.portal_notice
