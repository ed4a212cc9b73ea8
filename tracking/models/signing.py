"""DKIM keys: the domains outgoing mail is signed for."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class DkimKey(models.Model):
    """A private key that signs outgoing mail as `domain` (DKIM `d=`), published in DNS at
    `<selector>._domainkey.<domain>`. See tracking/delivery/dkim.py for which key signs what."""

    domain = models.CharField(max_length=253, unique=True)
    selector = models.CharField(max_length=63, default="iovox")
    private_key = models.TextField(help_text="PEM (PKCS#8 or PKCS#1) RSA private key.")
    public_key = models.TextField(help_text="Base64 DER of the public key, the DNS p= value.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "DKIM key"

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
