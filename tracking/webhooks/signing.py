"""Webhook secrets and the Standard Webhooks signature (the `standardwebhooks` package), so a
customer verifies our posts with any Standard Webhooks library."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

from standardwebhooks import Webhook

from tracking.models import WebhookEndpoint

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def secret_generate() -> str:
    """`whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The current secret, and for 24 h after a rotation the one before it."""
    keys = [endpoint.secret]
    if (
        endpoint.previous_secret
        and endpoint.previous_secret_until
        and now < endpoint.previous_secret_until
    ):
        keys.append(endpoint.previous_secret)
    return keys


def signature_headers(
    *, endpoint: WebhookEndpoint, message_id: str, body: str, now: datetime
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (space-separated `v1,...`
    signatures, one per secret in use: the Standard Webhooks way to rotate)."""
    signature = " ".join(
        Webhook(secret).sign(message_id, now, body) for secret in signing_secrets(endpoint, now)
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
