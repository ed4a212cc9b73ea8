"""DKIM keys: the domains outgoing mail is signed for."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class DkimKey(models.Model):
    """A private key that signs outgoing mail as `domain` (DKIM `d=`), published in DNS at
    `<selector>._domainkey.<domain>`. See tracking/delivery/dkim.py for which key signs what,
    and tracking/services/dkim_keys.py for a key's life:

        pending --(its record is seen in DNS)--> active --(a newer key becomes active)-->
        retiring --(DKIM_ROTATION_OVERLAP_DAYS later)--> retired

    Only an active key signs, and a domain has at most one. A retiring key signs nothing but
    its record stays published until `retire_after`, so mail it signed still verifies."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for its DNS record"
        ACTIVE = "active", "Signing"
        RETIRING = "retiring", "Replaced: keep its DNS record a while"
        RETIRED = "retired", "Retired: its DNS record may be removed"

    domain = models.CharField(max_length=253)
    selector = models.CharField(max_length=63)
    private_key = models.TextField(help_text="PEM (PKCS#8 or PKCS#1) RSA private key.")
    public_key = models.TextField(help_text="Base64 DER of the public key, the DNS p= value.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    retire_after = models.DateTimeField(
        null=True, blank=True, help_text="A replaced key's DNS record stays published until then."
    )

    class Meta:
        verbose_name = "DKIM key"
        ordering = ["domain", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="dkim_key_selector"),
            models.UniqueConstraint(
                fields=["domain"], condition=Q(status="active"), name="dkim_key_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dns_value(self) -> str:
        return f"v=DKIM1; k=rsa; p={self.public_key}"

    @property
    def dns_txt_strings(self) -> str:
        """The value as a zone file writes it: quoted strings of at most 255 characters."""
        value = self.dns_value
        return " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))

    @property
    def dns_record(self) -> str:
        """The whole zone file line to publish."""
        return f"{self.dns_name}. IN TXT {self.dns_txt_strings}"
