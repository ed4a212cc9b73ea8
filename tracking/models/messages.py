"""Tracked messages, their attachments, delivery attempts and tracking events."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from tracking.models.accounts import Account
from tracking.models.directory import Link
from tracking.models.fields import BulkInsertBinaryField


class Disposition(models.TextChoices):
    """The spec's delivery states, exact strings. Only the state machine writes them."""

    RECEIVED = "received", "Received"
    SENT = "sent", "Sent"
    QUEUED = "queued", "Queued"
    UNDELIVERABLE = "undeliverable", "Undeliverable"
    NO_MX_RECORD = "noMxRecord", "No Mx Record"
    NO_RULES = "no_rules", "No Rules"
    RULE_ERROR = "rule_error", "Rule Error"
    RECEIVED_BOUNCED = "received_bounced", "Bounced"
    EXPIRED = "expired", "Expired"


class EventSource(models.TextChoices):
    OURS = "ours", "Our tracking"
    ESP = "esp", "The ESP"


class ReadDisposition(models.TextChoices):
    UNREAD = "unread", "Unread"
    READ = "read", "Read"


class Direction(models.TextChoices):
    API = "api", "Sent through the API"
    ALIAS = "alias", "Forwarded from a link alias"
    RELAY = "relay", "Relayed through a proxy address"


class MessageQuerySet(models.QuerySet):
    def for_account(self, account: Account) -> MessageQuerySet:
        return self.filter(account=account)


class Message(models.Model):
    """One tracked email: what we were asked to send (or received to forward) and what became
    of it. The search fields of the spec are columns here so a search needs no joins beyond
    the link and its node."""

    message_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    # No index of its own: every search index below leads with the account.
    account = models.ForeignKey(
        Account, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    link = models.ForeignKey(Link, on_delete=models.PROTECT, related_name="messages")
    direction = models.CharField(max_length=8, choices=Direction.choices, default=Direction.API)
    # The conversation's UUID (conversations.Conversation.conversation_id), kept here as a value
    # so tracking does not depend on the conversations app.
    conversation_id = models.UUIDField(null=True, blank=True)

    sender_address = models.CharField(max_length=254)
    sender_name = models.CharField(max_length=200, blank=True)
    recipient_address = models.CharField(max_length=254)
    # The domain part of recipient_address, lower-cased: delivery groups messages by it so one
    # SMTP connection to an MX carries several messages.
    recipient_domain = models.CharField(max_length=253, blank=True, default="")
    recipient_name = models.CharField(max_length=200, blank=True)
    proxy_address = models.CharField(max_length=254, blank=True)
    proxy_name = models.CharField(max_length=200, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    text_content = models.TextField(blank=True)
    html_content = models.TextField(blank=True)
    # Extra headers to carry (In-Reply-To, References, ...), as {"Name": "value"}.
    headers = models.JSONField(default=dict, blank=True)
    # For forwarded and relayed mail: the original message, whose MIME structure is kept.
    source_mime = BulkInsertBinaryField(null=True, blank=True, editable=False)
    # source_mime carries its open and click tracking already (added when the inbound mail was
    # routed, sharing that parse); else delivery adds it.
    source_tracked = models.BooleanField(default=False)
    # The Message-ID header; never looked up (bounces name their message by the VERP address).
    smtp_message_id = models.CharField(max_length=998, blank=True)

    receive_date = models.DateTimeField(default=timezone.now)
    delivery_date = models.DateTimeField(null=True, blank=True)
    disposition = models.CharField(
        max_length=20, choices=Disposition.choices, default=Disposition.RECEIVED
    )
    read_disposition = models.CharField(
        max_length=8, choices=ReadDisposition.choices, default=ReadDisposition.UNREAD
    )
    read_first_date = models.DateTimeField(null=True, blank=True)
    # Every open, click and bounce, counted (exactly, by atomic increments); only a bounded
    # number are kept as TrackingEvents (tracking/engagement/retention.py).
    open_count = models.PositiveBigIntegerField(default=0)
    open_automated_count = models.PositiveBigIntegerField(default=0)
    click_count = models.PositiveBigIntegerField(default=0)
    click_automated_count = models.PositiveBigIntegerField(default=0)
    bounce_count = models.PositiveBigIntegerField(default=0)

    # Delivery bookkeeping (tracking/delivery/claims.py). A claim for an attempt sets
    # claim_token and locked_until by conditional UPDATE, so two workers never hand the same
    # attempt to a remote server; state_version counts disposition changes (state.py), which
    # are conditional on it. None of these is indexed, so a claim is a HOT update.
    attempt_count = models.PositiveIntegerField(default=0)
    # When the next attempt is due (for the first, when the message was stored); none once the
    # message waits for no attempt.
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True)
    state_version = models.PositiveIntegerField(default=0)
    claim_token = models.UUIDField(null=True, blank=True, editable=False)
    last_smtp_response = models.TextField(blank=True)
    # Why a message ended as it did when no SMTP reply says it (rule error, bounce diagnostic).
    status_detail = models.TextField(blank=True)
    # The id the ESP gave the message (DELIVERY_TRANSPORT=anymail), by which its events find it.
    esp_message_id = models.CharField(max_length=255, blank=True)
    # When its bodies, MIME and attachments were deleted (MESSAGE_CONTENT_RETENTION_DAYS,
    # tracking/services/retention.py); its metadata stays until MESSAGE_RETENTION_DAYS.
    content_purged_at = models.DateTimeField(null=True, blank=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        # Search (tracking.search): every filter's index leads with the account and ends with
        # receive_date, so the date range, the tenancy check and COUNT(*) are answered from
        # the index alone (index-only scans), and a page in receive_date order needs no sort.
        indexes = [
            # The search's default order (receive_date ASC, delivery_date DESC, id) exactly,
            # so a page of it is read in order and a deep page's keys come from the index.
            models.Index(
                fields=["account", "receive_date", "-delivery_date", "id"],
                name="msg_account_received_order",
            ),
            models.Index(
                fields=["account", "link", "receive_date"], name="msg_account_link_received"
            ),
            models.Index(
                fields=["account", "disposition", "receive_date"], name="msg_account_disp"
            ),
            models.Index(
                fields=["account", "conversation_id", "receive_date"],
                name="msg_account_conv_received",
                condition=models.Q(conversation_id__isnull=False),
            ),
            models.Index(
                fields=["account", "recipient_address", "receive_date"],
                name="msg_account_rcpt_received",
            ),
            models.Index(
                fields=["account", "sender_address", "receive_date"],
                name="msg_account_sender_received",
            ),
            models.Index(
                fields=["account", "proxy_address", "receive_date"],
                name="msg_account_proxy_received",
            ),
            # Delivery (tracking/delivery/claims.py): the recipient domains with waiting mail
            # in turn, and a domain's oldest messages ...
            models.Index(fields=["disposition", "recipient_domain", "id"], name="msg_disp_domain"),
            # ... and messages by when they fall due: the latest, and expiry.
            models.Index(fields=["disposition", "next_attempt_at"], name="msg_disp_due"),
            # ESP events (tracking/delivery/esp_events.py) name the message by the ESP's id.
            models.Index(
                fields=["esp_message_id"],
                name="msg_esp_message_id",
                condition=~models.Q(esp_message_id=""),
            ),
            # Retention: the oldest messages whose content is still kept. Appended at its
            # right end (receive_date grows), and a message leaves it once its content goes.
            models.Index(
                fields=["receive_date"],
                name="msg_content_kept",
                condition=models.Q(content_purged_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} to {self.recipient_address} ({self.disposition})"

    @property
    def event_count(self) -> int:
        """Opens, clicks and bounces ever recorded, kept or not."""
        return self.open_count + self.click_count + self.bounce_count

    def sender_authentication(self) -> dict | None:
        """For a message passed on from inbound mail (forwarded or relayed): the SPF, DKIM,
        ARC and DMARC verdicts on its writer as admission found them, with `quarantined`;
        None for a message of the API, or mail received before they were recorded."""
        inbound = self.inbound_sources.exclude(authentication={}).order_by("pk").first()
        if inbound is None:
            return None
        return {**inbound.authentication, "quarantined": inbound.quarantined}


class Attachment(models.Model):
    class Disposition(models.TextChoices):
        ATTACHMENT = "attachment", "Attachment"
        INLINE = "inline", "Inline"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    disposition = models.CharField(max_length=10, choices=Disposition.choices)
    content_type = models.CharField(max_length=255)
    filename = models.CharField(max_length=255, blank=True)
    content_id = models.CharField(max_length=255, blank=True)
    content = models.BinaryField()

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.filename or self.content_id or self.content_type


class BounceType(models.TextChoices):
    """What a failure says about the address (tracking/bounces.py decides)."""

    HARD = "hard", "Hard: the address does not exist"
    SOFT = "soft", "Soft: temporary, or the mailbox is full"
    BLOCK = "block", "Block: refused by policy or reputation"


class DeliveryAttempt(models.Model):
    """One try at handing a message to a remote server, with what it answered; or a delivery
    status notification (a bounce) that came back later (`outcome` received_bounced)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attempts")
    attempted_at = models.DateTimeField(default=timezone.now)
    mx_host = models.CharField(max_length=253, blank=True)
    smtp_code = models.PositiveSmallIntegerField(null=True, blank=True)
    smtp_text = models.TextField(blank=True)
    # RFC 3463 enhanced status code ("5.1.1"), when the reply or the report gives one.
    enhanced_code = models.CharField(max_length=16, blank=True)
    # Set on a failure only.
    bounce_type = models.CharField(max_length=5, choices=BounceType.choices, blank=True)
    outcome = models.CharField(max_length=20, choices=Disposition.choices)

    class Meta:
        ordering = ["attempted_at", "pk"]

    def __str__(self) -> str:
        return f"{self.attempted_at:%Y-%m-%d %H:%M:%S} {self.mx_host} {self.smtp_code}"


class TrackingEvent(models.Model):
    """An open, a click or a bounce, classified as a person's or a machine's. A message keeps
    its first and its most recent ones; its counters count them all."""

    class Kind(models.TextChoices):
        OPEN = "open", "Open"
        CLICK = "click", "Click"
        BOUNCE = "bounce", "Bounce"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    occurred_at = models.DateTimeField(default=timezone.now)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    url = models.TextField(blank=True)
    automated = models.BooleanField(default=False)
    automated_reason = models.CharField(max_length=200, blank=True)
    # Ours (our pixel, our click links), or reported by the ESP that delivered the message.
    source = models.CharField(max_length=10, choices=EventSource.choices, default="ours")

    class Meta:
        ordering = ["occurred_at", "pk"]
        indexes = [models.Index(fields=["message", "occurred_at"], name="event_message_time")]

    def __str__(self) -> str:
        return f"{self.kind} at {self.occurred_at:%Y-%m-%d %H:%M:%S}"
