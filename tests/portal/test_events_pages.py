"""The Webhooks and Suppressions pages through Django's client: every action, bad input,
tenancy, and the notice of a webhook the worker disabled."""

from __future__ import annotations

import pytest

from tests.factories import MessageFactory
from tests.worker import webhooks_send_due
from tracking.models import Suppression, WebhookDelivery, WebhookEndpoint
from tracking.services.suppressions import suppression_add
from tracking.webhooks.sender import endpoint_failed
from tracking.webhooks.services import webhook_create, webhook_test

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def webhooks_to_loopback(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 1.0


def test_add_a_webhook_shows_its_secret_once(alice_portal, alice, receiver):
    response = alice_portal.post(
        "/webhooks/new",
        {"url": receiver.url, "events": ["email.sent", "email.opened"], "description": "CRM"},
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get(account=alice.account)
    assert endpoint.events == ["email.sent", "email.opened"]
    assert endpoint.secret in response.content.decode()
    page = alice_portal.get(f"/webhooks/{endpoint.webhook_id}/").content.decode()
    assert endpoint.secret not in page and receiver.url in page


def test_a_bad_or_private_url_is_refused_with_the_reason(alice_portal, settings):
    response = alice_portal.post("/webhooks/new", {"url": "ftp://x.example/"})
    assert response.status_code == 400
    assert "must be an http or https URL" in response.content.decode()
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = alice_portal.post("/webhooks/new", {"url": "http://10.0.0.8/hook"})
    assert response.status_code == 400
    assert "a private address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_edit_disable_rotate_test_and_retry(alice_portal, alice, flaky_receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [3600]
    endpoint = webhook_create(account=alice.account, url=flaky_receiver.url)
    base = f"/webhooks/{endpoint.webhook_id}"
    assert (
        alice_portal.post(
            f"{base}/edit", {"url": flaky_receiver.url, "description": "new"}
        ).status_code
        == 302
    )
    endpoint.refresh_from_db()
    assert endpoint.description == "new"

    old_secret = endpoint.secret
    rotated = alice_portal.post(f"{base}/rotate")
    endpoint.refresh_from_db()
    assert endpoint.secret != old_secret and endpoint.secret in rotated.content.decode()

    assert alice_portal.post(f"{base}/test").status_code == 302
    webhooks_send_due()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.last_status_code == 500  # then 200
    page = alice_portal.get(f"{base}/").content.decode()
    assert "webhook.test" in page and "HTTP 500" in page and "Retry now" in page
    assert "&quot;type&quot;: &quot;webhook.test&quot;" in page  # the payload

    assert alice_portal.post(f"{base}/deliveries/{delivery.pk}/retry").status_code == 302
    webhooks_send_due()
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempt_count == 2

    assert alice_portal.post(f"{base}/toggle").status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert alice_portal.post(f"{base}/delete").status_code == 302
    assert not WebhookEndpoint.objects.exists()


def test_another_accounts_webhook_is_a_404(alice_portal, bob, receiver):
    endpoint = webhook_create(account=bob.account, url=receiver.url)
    delivery = webhook_test(endpoint=endpoint)
    base = f"/webhooks/{endpoint.webhook_id}"
    assert alice_portal.get(f"{base}/").status_code == 404
    assert alice_portal.get(f"{base}/edit").status_code == 404
    for action in ("toggle", "rotate", "test", "delete", f"deliveries/{delivery.pk}/retry"):
        assert alice_portal.post(f"{base}/{action}").status_code == 404, action
    assert receiver.url not in alice_portal.get("/webhooks/").content.decode()


def test_a_disabled_webhook_is_told_on_every_page_until_enabled(
    alice_portal, alice, receiver, settings
):
    settings.WEBHOOK_DISABLE_AFTER = 0
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    from django.utils import timezone

    endpoint_failed(endpoint, now=timezone.now())
    page = alice_portal.get("/contacts/").content.decode()
    assert "was disabled: it kept failing" in page
    alice_portal.post(f"/webhooks/{endpoint.webhook_id}/toggle")
    assert "was disabled" not in alice_portal.get("/contacts/").content.decode()


def test_suppressions_search_add_and_remove(alice_portal, alice, bob):
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    suppression_add(
        account=alice.account,
        email_address="gone@example.net",
        reason="hard_bounce",
        smtp_code=550,
        enhanced_code="5.1.1",
        smtp_text="No such user",
        message=message,
    )
    suppression_add(account=bob.account, email_address="bobs@example.net")
    page = alice_portal.get("/suppressions/").content.decode()
    assert "gone@example.net" in page and "550 5.1.1" in page and "No such user" in page
    assert "bobs@example.net" not in page
    assert (
        alice_portal.post("/suppressions/", {"email_address": "x", "reason": "manual"}).status_code
        == 400
    )
    assert (
        alice_portal.post(
            "/suppressions/", {"email_address": "Ann@Example.net", "reason": "complaint"}
        ).status_code
        == 302
    )
    found = alice_portal.get("/suppressions/?q=ann&reason=complaint").content.decode()
    assert "ann@example.net" in found and "gone@example.net" not in found
    assert (
        alice_portal.post("/suppressions/remove", {"email_address": "bobs@example.net"}).status_code
        == 404
    )
    assert (
        alice_portal.post("/suppressions/remove", {"email_address": "gone@example.net"}).status_code
        == 302
    )
    assert list(
        Suppression.objects.filter(account=alice.account).values_list("email_address", flat=True)
    ) == ["ann@example.net"]


def test_the_pages_cost_a_few_queries(alice_portal, alice, receiver, django_assert_max_num_queries):
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    for _ in range(5):
        webhook_test(endpoint=endpoint)
    for n in range(30):
        suppression_add(account=alice.account, email_address=f"u{n}@example.net")
    with django_assert_max_num_queries(6):
        assert alice_portal.get(f"/webhooks/{endpoint.webhook_id}/").status_code == 200
    with django_assert_max_num_queries(6):
        assert alice_portal.get("/suppressions/").status_code == 200
    with django_assert_max_num_queries(5):
        assert alice_portal.get("/webhooks/").status_code == 200


def test_the_timeline_shows_each_failure_with_its_codes_and_type(alice_portal, alice):
    from tracking.models import DeliveryAttempt

    message = MessageFactory(
        account=alice.account, link__node__account=alice.account, disposition="received_bounced"
    )
    DeliveryAttempt.objects.create(
        message=message, mx_host="mx.example.net", smtp_code=451, smtp_text="4.7.1 Try later",
        enhanced_code="4.7.1", bounce_type="soft", outcome="queued",
    )  # fmt: skip
    DeliveryAttempt.objects.create(
        message=message, mx_host="googlemail.com", smtp_code=550, smtp_text="5.1.1 No such user",
        enhanced_code="5.1.1", bounce_type="hard", outcome="received_bounced",
    )  # fmt: skip
    page = alice_portal.get(f"/messages/{message.message_id}").content.decode()
    assert "Delivery attempt to mx.example.net" in page
    assert "Soft: temporary, or the mailbox is full 4.7.1" in page
    assert "Bounce report from googlemail.com" in page
    assert "Hard: the address does not exist 5.1.1" in page
