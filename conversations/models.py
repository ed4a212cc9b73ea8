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

    @property
    def is_shared(self) -> bool:
        return self.account_id is None

    @classmethod
    def usable_by(cls, account: Account) -> models.QuerySet[ProxyDomain]:
        return cls.objects.filter(Q(account__isnull=True) | Q(account=account))


class Conversation(models.Model):
    """Two parties talking through one proxy address: party A is the `sender_address` of the
    request that created it, party B its `recipient_address`."""

    conversation_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="conversations")
    link = models.ForeignKey(Link, on_delete=models.PROTECT, related_name="conversations")
    proxy_domain = models.ForeignKey(ProxyDomain, on_delete=models.PROTECT)
    proxy_address = models.CharField(max_length=254, unique=True)
    proxy_name = models.CharField(max_length=200, blank=True)
    party_a_address = models.CharField(max_length=254)
    party_a_name = models.CharField(max_length=200, blank=True)
    party_b_address = models.CharField(max_length=254)
    party_b_name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.proxy_address}: {self.party_a_address} <-> {self.party_b_address}"


class InboundMessage(models.Model):
    """A message as inbound SMTP received it, stored before the 250 reply so an accepted
    message is never lost; the worker routes it afterwards."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be routed"
        ROUTED = "routed", "Routed"
        REFUSED = "refused", "Refused"
        FAILED = "failed", "Failed"

    received_at = models.DateTimeField(default=timezone.now)
    peer = models.CharField(max_length=100, blank=True)
    mail_from = models.CharField(max_length=998, blank=True)
    rcpt_to = models.JSONField(default=list)
    raw = models.BinaryField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    messages = models.ManyToManyField(Message, blank=True, related_name="inbound_sources")

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["status", "received_at"], name="inbound_status_time")]

    def __str__(self) -> str:
        return f"{self.mail_from} -> {', '.join(self.rcpt_to)} ({self.status})"
