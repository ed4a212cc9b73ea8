"""Events out: the outbox of events, the customers' webhook endpoints, the deliveries of events
to them, and the suppression list.

An Event is written in the same transaction as the change it reports (tracking/events), so it
exists exactly when the change does. The worker turns new events into one WebhookDelivery per
matching endpoint and posts them (tracking/webhooks).
"""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tracking.models.accounts import Account
from tracking.models.messages import Message


class EventType(models.TextChoices):
    """Every event a customer can subscribe to. `email.<disposition>` carries the spec's
    disposition names verbatim."""

    RECEIVED = "email.received"
    SENT = "email.sent"
    QUEUED = "email.queued"
    UNDELIVERABLE = "email.undeliverable"
    NO_MX_RECORD = "email.noMxRecord"
    NO_RULES = "email.no_rules"
    RULE_ERROR = "email.rule_error"
    RECEIVED_BOUNCED = "email.received_bounced"
    EXPIRED = "email.expired"
    OPENED = "email.opened"
    CLICKED = "email.clicked"
    SUPPRESSED = "email.suppressed"
    COMPLAINED = "email.complained"  # the recipient marked it as spam (an ESP's report)


# Sent by `POST /rest/v1/webhooks/{id}/test` only; not a subscription.
TEST_EVENT_TYPE = "webhook.test"


class Event(models.Model):
    """One change worth telling a customer, written with the change (the outbox). `data` is
    the payload's `data`, as it was when the change was made."""

    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    type = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)
    data = models.JSONField(default=dict)
    # False until the worker has made its deliveries (one per matching endpoint, maybe none).
    dispatched = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(
                fields=["id"], name="event_undispatched", condition=models.Q(dispatched=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.public_id}"

    @property
    def public_id(self) -> str:
        """The payload's `id` and the `webhook-id` header: the same on every retry."""
        return f"evt_{self.event_id.hex}"


class WebhookEndpointQuerySet(models.QuerySet):
    def for_account(self, account: Account) -> WebhookEndpointQuerySet:
        return self.filter(account=account)


class WebhookEndpoint(models.Model):
    """A customer's URL that receives signed events."""

    webhook_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    # Event types subscribed to; empty: all.
    events = models.JSONField(default=list, blank=True)
    description = models.CharField(max_length=500, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    # `whsec_` + base64. Stored as it is: the worker needs it to sign.
    secret = models.CharField(max_length=100)
    # After a rotation the old secret signs too, until `previous_secret_until`.
    previous_secret = models.CharField(max_length=100, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    # The first failure since the last success; cleared by a success.
    failing_since = models.DateTimeField(null=True, blank=True)
    # Why the worker disabled it (empty when enabled, or disabled by the customer).
    disabled_reason = models.CharField(max_length=500, blank=True)

    objects = WebhookEndpointQuerySet.as_manager()

    def __str__(self) -> str:
        return self.url

    def subscribes_to(self, event_type: str) -> bool:
        return not self.events or event_type in self.events


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event to one endpoint: its attempts so far and the next one."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(
        max_length=10,
        choices=WebhookDeliveryStatus.choices,
        default=WebhookDeliveryStatus.PENDING,
    )
    created_at = models.DateTimeField(default=timezone.now)
    attempt_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    # The first bytes of the endpoint's last answer, for the portal.
    last_response = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # A claim by the worker's sender (conditional UPDATE); lapses if its worker dies.
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The sender's claims: pending deliveries, per endpoint, by due time.
            models.Index(
                fields=["endpoint", "next_attempt_at"],
                name="webhook_delivery_due",
                condition=models.Q(status="pending"),
            ),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} to {self.endpoint_id} ({self.status})"


class SuppressionReason(models.TextChoices):
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    COMPLAINT = "complaint", "Complaint"
    MANUAL = "manual", "Added by hand"


class SuppressionQuerySet(models.QuerySet):
    def for_account(self, account: Account) -> SuppressionQuerySet:
        return self.filter(account=account)


class Suppression(models.Model):
    """An address the account's mail is never sent to, and why."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="suppressions")
    # Lower-cased, so one address is one row whatever its case.
    email_address = models.CharField(max_length=254)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    created_at = models.DateTimeField(default=timezone.now)
    # The bounce that caused it (hard_bounce): its codes and text, and the message.
    smtp_code = models.PositiveSmallIntegerField(null=True, blank=True)
    enhanced_code = models.CharField(max_length=16, blank=True)
    smtp_text = models.CharField(max_length=1000, blank=True)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = SuppressionQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "email_address"], name="suppression_unique_address"
            )
        ]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="suppression_account_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.email_address} ({self.reason})"
