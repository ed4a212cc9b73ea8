"""Webhook endpoints: create, change, rotate the secret, send a test, retry a delivery. The
REST API and the portal both act through these."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from tracking.events import subscriptions_changed
from tracking.models import (
    TEST_EVENT_TYPE,
    Account,
    Event,
    EventType,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from tracking.webhooks.signing import secret_generate

# How long the secret before a rotation keeps signing alongside the new one.
ROTATION_OVERLAP = timedelta(hours=24)
MAX_ENDPOINTS = 20


class WebhookError(ValueError):
    """Input a service refuses: `errors` maps a field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k} {v}" for k, v in errors.items()))
        self.errors = errors


def event_types_check(events: Sequence[str]) -> list[str]:
    """The subscribed event types, each one of EventType (duplicates dropped, order kept)."""
    unknown = [e for e in events if e not in EventType.values]
    if unknown:
        raise WebhookError({"events": f"has unknown event types: {', '.join(map(str, unknown))}"})
    return list(dict.fromkeys(events))


@transaction.atomic
def webhook_create(
    *, account: Account, url: str, events: Sequence[str] = (), description: str = ""
) -> WebhookEndpoint:
    """A new endpoint with a new secret (shown to the customer once: `endpoint.secret`). The
    URL must have been checked (tracking.webhooks.addresses.webhook_url_check)."""
    if WebhookEndpoint.objects.for_account(account).count() >= MAX_ENDPOINTS:
        raise WebhookError(
            {"url": f"cannot be added: an account has {MAX_ENDPOINTS} webhooks at most"}
        )
    endpoint = WebhookEndpoint.objects.create(
        account=account,
        url=url,
        events=event_types_check(events),
        description=description,
        secret=secret_generate(),
    )
    transaction.on_commit(lambda: subscriptions_changed(account.pk))
    return endpoint


def webhook_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given. Enabling an endpoint the worker disabled clears its failures."""
    changed: list[str] = []
    if url is not None:
        endpoint.url = url
        changed.append("url")
    if events is not None:
        endpoint.events = event_types_check(events)
        changed.append("events")
    if description is not None:
        endpoint.description = description
        changed.append("description")
    if enabled is not None and enabled != endpoint.enabled:
        endpoint.enabled = enabled
        endpoint.failing_since = None
        endpoint.disabled_reason = ""
        changed += ["enabled", "failing_since", "disabled_reason"]
    if changed:
        with transaction.atomic():
            endpoint.save(update_fields=changed)
            if enabled:
                _notice_clear(endpoint.account_id)
        subscriptions_changed(endpoint.account_id)
    return endpoint


def webhook_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()
    subscriptions_changed(endpoint.account_id)


def webhook_rotate_secret(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret; the old one keeps signing alongside it for 24 hours, so receivers can
    switch over without missing a post."""
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_until = timezone.now() + ROTATION_OVERLAP
    endpoint.secret = secret_generate()
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_until"])
    return endpoint


@transaction.atomic
def webhook_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook.test` event for this endpoint alone, due at once (the worker posts it within
    a moment, whatever the endpoint subscribes to, enabled or not)."""
    now = timezone.now()
    event = Event.objects.create(
        account_id=endpoint.account_id,
        type=TEST_EVENT_TYPE,
        created_at=now,
        data={"webhook_id": str(endpoint.webhook_id), "url": endpoint.url},
        dispatched=True,
    )
    return WebhookDelivery.objects.create(
        endpoint=endpoint, event=event, created_at=now, next_attempt_at=now
    )


def webhook_delivery_retry(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Attempt the delivery again now (a failed one too); the attempt count goes on."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDeliveryStatus.PENDING, next_attempt_at=timezone.now()
    )
    delivery.refresh_from_db()
    return delivery


def _notice_clear(account_id: int) -> None:
    if (
        not WebhookEndpoint.objects.filter(account_id=account_id)
        .exclude(disabled_reason="")
        .exists()
    ):
        Account.objects.filter(pk=account_id).update(portal_notice="")
