"""Proxy domains, conversations through proxy addresses, and mail received by inbound SMTP."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from tracking.models import Account, Link, Message


class ProxyDomain(models.Model):
    """A domain proxy addresses are generated on: shared by every account, or private to one."""

    domain = models.CharField(max_length=253, unique=True)
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="proxy_domains"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain if self.account_id is None else f"{self.domain} ({self.account})"

    @classmethod
    def usable_by(cls, account: Account) -> models.QuerySet[ProxyDomain]:
        return cls.objects.filter(Q(account__isnull=True) | Q(account=account))


class Conversation(models.Model):
    """Two parties talking through one address of ours.

    - `proxy`: through a proxy address; party A is the `sender_address` of the request that
      created it, party B its `recipient_address`.
    - `alias`: opened by mail to a link's alias. Party A is the writer, party B the link's
      contact; `proxy_address` is the writer's reverse address (on the alias's domain, one per
      link and writer): the contact receives the writer's mail From it, and their reply to it
      reaches the writer From the alias (conversations/inbound/forwarding.py)."""

    class Kind(models.TextChoices):
        PROXY = "proxy", "proxy address"
        ALIAS = "alias", "link alias"

    conversation_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="conversations")
    link = models.ForeignKey(Link, on_delete=models.PROTECT, related_name="conversations")
    kind = models.CharField(max_length=5, choices=Kind.choices, default=Kind.PROXY)
    # None for an alias conversation (its address is on the link alias's domain).
    proxy_domain = models.ForeignKey(ProxyDomain, null=True, blank=True, on_delete=models.PROTECT)
    proxy_address = models.CharField(max_length=254, unique=True)
    proxy_name = models.CharField(max_length=200, blank=True)
    party_a_address = models.CharField(max_length=254)
    party_a_name = models.CharField(max_length=200, blank=True)
    party_b_address = models.CharField(max_length=254)
    party_b_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["link", "party_a_address"],
                condition=Q(kind="alias"),
                name="conversation_one_reverse_address_per_writer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.proxy_address}: {self.party_a_address} <-> {self.party_b_address}"


class RelayedMessageId(models.Model):
    """A message relayed in a conversation is known by two Message-IDs: the one its writer's
    mail client gave it (`original`) and ours, on the copy the other party received. Replies
    name one or the other in In-Reply-To and References; each is shown to the other party
    as the name it knows, so both mail clients thread the conversation and neither sees
    the other's Message-ID (which names the writer's domain, often the writer's host)."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="relayed_message_ids"
    )
    # Message-IDs are rarely longer than 100 characters; a longer one is not mapped (a
    # unique index entry must stay small).
    original = models.CharField(max_length=250)
    ours = models.CharField(max_length=250, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "original"], name="relayed_message_id_original"
            )
        ]

    def __str__(self) -> str:
        return f"{self.original} = {self.ours}"


class InboundMessage(models.Model):
    """A message as inbound SMTP received it, stored before the 250 reply so an accepted
    message is never lost; the worker routes it afterwards.

    Routing that cannot finish for now (an error, or a DNS failure while authenticating the
    sender) leaves the message `deferred` until `retry_at`, a bounded number of times
    (INBOUND_RETRY_SCHEDULE); then it ends `failed` (an error) or `refused` (a sender that
    could not be authenticated). Routed, refused and failed messages are purged after
    INBOUND_RETENTION_DAYS."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be routed"
        DEFERRED = "deferred", "Waiting to be routed again"
        ROUTED = "routed", "Routed"
        REFUSED = "refused", "Refused"
        FAILED = "failed", "Failed"

    received_at = models.DateTimeField(default=timezone.now)
    peer = models.CharField(max_length=100, blank=True)
    helo = models.CharField(max_length=255, blank=True)
    mail_from = models.CharField(max_length=998, blank=True)
    rcpt_to = models.JSONField(default=list)
    raw = models.BinaryField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    retry_at = models.DateTimeField(null=True, blank=True)
    # The sender's authentication, as conversations.inbound.authentication found it ("" when
    # it was not checked): SPF, DKIM and DMARC results and our Authentication-Results value.
    spf = models.CharField("SPF", max_length=10, blank=True)
    dkim = models.CharField("DKIM", max_length=10, blank=True)
    dmarc = models.CharField("DMARC", max_length=10, blank=True)
    authentication_results = models.TextField(blank=True)
    # All the verdicts at admission (Verdict.as_json): shown in the API and the portal.
    authentication = models.JSONField(default=dict, blank=True)
    # DMARC failed for a From domain whose policy asks quarantine: forwarded marked as spam.
    quarantined = models.BooleanField(default=False)
    messages = models.ManyToManyField(Message, blank=True, related_name="inbound_sources")

    class Meta:
        ordering = ["-received_at"]
        indexes = [
            models.Index(fields=["status", "received_at"], name="inbound_status_time"),
            models.Index(
                fields=["retry_at"],
                name="inbound_deferred_retry",
                condition=Q(status="deferred"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.mail_from} -> {', '.join(self.rcpt_to)} ({self.status})"


class InboundUsage(models.Model):
    """How much of an inbound limit one client or one recipient has used in the current
    window: the messages a client IP sent this minute, the bytes an alias received today
    (conversations/inbound/limits.py). One row per client or recipient, its window moved on
    by the first message of the next one."""

    key = models.CharField(max_length=300, unique=True)  # "client:192.0.2.1", "recipient:a@b"
    window_start = models.BigIntegerField()  # Unix time the window began
    amount = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.amount}"


class DomainCheck(models.Model):
    """What DNS said of one of our domains (alias, proxy, bounce) or of a customer's signing
    domain at its last check (conversations/domains.py): each record's status and, where it is
    not ok, the exact record to publish."""

    class Status(models.TextChoices):
        OK = "ok", "ok"
        MISSING = "missing", "missing"
        WRONG = "wrong", "wrong"
        UNKNOWN = "unknown", "could not check"

    domain = models.CharField(max_length=253, unique=True)
    kinds = models.CharField(max_length=100, help_text="alias, proxy, bounce, signing, spf")
    # "" where the check does not apply to the domain's kinds (MX of a signing domain).
    mx = models.CharField("MX", max_length=10, choices=Status.choices, blank=True)
    spf = models.CharField("SPF", max_length=10, choices=Status.choices, blank=True)
    dkim = models.CharField("DKIM", max_length=10, choices=Status.choices, blank=True)
    dmarc = models.CharField("DMARC", max_length=10, choices=Status.choices, blank=True)
    # One entry a record looked at: {"check", "status", "name", "detail", "record"}.
    findings = models.JSONField(default=list)
    checked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain
