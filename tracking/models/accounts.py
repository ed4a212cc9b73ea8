"""Accounts (customers), their portal users and their API credentials."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# last_used is refreshed at most this often, so authentication costs no write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


# An API username travels in an HTTP header, which carries Latin-1 bytes at best: letters,
# digits and . _ @ + - only, so every username that can be created can also authenticate.
# Checked when a credential is created (admin, create_account, services) and when one is
# presented.
username_validator = RegexValidator(
    r"^[A-Za-z0-9._@+-]+\Z",
    "may contain only letters (A-Z, a-z), digits and the characters . _ @ + -",
    code="invalid_username",
)


class DeliveryTransport(models.TextChoices):
    """How a message leaves (tracking/delivery/transports.py)."""

    MX = "mx", "Straight to the recipient's MX"
    SMTP = "smtp", "Through the SMTP relay"
    ANYMAIL = "anymail", "Through the ESP (anymail)"


class Account(models.Model):
    """A customer. Everything a customer can reach hangs off one account."""

    name = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Shown at the top of every portal page until dealt with (a webhook the worker disabled).
    portal_notice = models.CharField(max_length=500, blank=True)
    # Blank: DELIVERY_TRANSPORT. Support sets it for an account on its company relay or an ESP.
    delivery_transport = models.CharField(
        max_length=10,
        choices=DeliveryTransport.choices,
        blank=True,
        help_text="Blank: the deployment's DELIVERY_TRANSPORT.",
    )

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A portal login. Staff users (support) may have no account."""

    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="users"
    )


def hash_secure_key(secure_key: str) -> str:
    """SHA-256 of the key. Keys are long and random, so a fast hash is safe here, where a
    password hasher (~300 ms) would be far too slow to run on every request."""
    return hashlib.sha256(secure_key.encode()).hexdigest()


class ApiCredential(models.Model):
    """The `username` + `secureKey` pair of the REST API. The key is stored hashed only."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="credentials")
    username = models.CharField(max_length=150, unique=True)
    key_hash = models.CharField(max_length=64)
    key_hint = models.CharField(max_length=8, blank=True, help_text="First characters of the key.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used = models.DateTimeField(null=True, blank=True)

    # DRF treats the authenticated credential as request.user.
    is_authenticated = True
    is_anonymous = False

    def __str__(self) -> str:
        return self.username

    def key_matches(self, secure_key: str) -> bool:
        return hmac.compare_digest(self.key_hash, hash_secure_key(secure_key))

    def touch(self) -> None:
        """Record use, with one UPDATE a minute at most."""
        now = timezone.now()
        if self.last_used is None or now - self.last_used >= LAST_USED_RESOLUTION:
            ApiCredential.objects.filter(pk=self.pk).update(last_used=now)
            self.last_used = now
