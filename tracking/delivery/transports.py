"""Which way a message leaves: straight to the MX, through the SMTP relay, or through an ESP
(docs/transports.md). DELIVERY_TRANSPORT is the deployment's choice; an account's
`delivery_transport`, set by support in admin, overrides it.

A transport that is not configured well enough to try is a problem for `manage.py check`
(tracking.E010) and, at delivery, a temporary failure: its messages stay `queued`, never lost.
"""

from __future__ import annotations

from collections import defaultdict

from django.conf import settings

from tracking.models import Account, DeliveryTransport, Message

# The ESPs we deliver through, with the anymail setting each cannot do without.
ESP_BACKENDS: dict[str, str] = {
    "mailgun": "anymail.backends.mailgun.EmailBackend",
    "postmark": "anymail.backends.postmark.EmailBackend",
    "sendgrid": "anymail.backends.sendgrid.EmailBackend",
    "amazon_ses": "anymail.backends.amazon_ses.EmailBackend",
    "sparkpost": "anymail.backends.sparkpost.EmailBackend",
}
ESP_REQUIRED_SETTING: dict[str, str | None] = {
    "mailgun": "MAILGUN_API_KEY",
    "postmark": "POSTMARK_SERVER_TOKEN",
    "sendgrid": "SENDGRID_API_KEY",
    "amazon_ses": None,  # boto3 finds its credentials itself (environment, instance role)
    "sparkpost": "SPARKPOST_API_KEY",
}
RELAY_SECURITY = ("starttls", "tls", "none")


def messages_by_transport(messages: list[Message]) -> dict[str, list[Message]]:
    """Claimed messages grouped by the transport that delivers each (one query). Each message
    also keeps its transport as `delivery_transport`, for its outcome's metric and log line."""
    overrides = dict(
        Account.objects.filter(pk__in={m.account_id for m in messages})
        .exclude(delivery_transport="")
        .values_list("pk", "delivery_transport")
    )
    groups: dict[str, list[Message]] = defaultdict(list)
    for message in messages:
        message.delivery_transport = (
            overrides.get(message.account_id) or settings.DELIVERY_TRANSPORT
        )
        groups[message.delivery_transport].append(message)
    return dict(groups)


def transport_problem(transport: str) -> str | None:
    """Why `transport` cannot be tried as configured, or None."""
    if transport == DeliveryTransport.MX:
        return None
    if transport == DeliveryTransport.SMTP:
        if not settings.SMTP_RELAY_HOST:
            return "DELIVERY_TRANSPORT smtp needs SMTP_RELAY_HOST"
        if settings.SMTP_RELAY_SECURITY not in RELAY_SECURITY:
            return f"SMTP_RELAY_SECURITY must be one of {', '.join(RELAY_SECURITY)}"
        if bool(settings.SMTP_RELAY_USERNAME) != bool(settings.SMTP_RELAY_PASSWORD):
            return "SMTP_RELAY_USERNAME and SMTP_RELAY_PASSWORD go together"
        return None
    if transport == DeliveryTransport.ANYMAIL:
        esp = settings.ANYMAIL_ESP
        if esp not in ESP_BACKENDS:
            return f"ANYMAIL_ESP must be one of {', '.join(ESP_BACKENDS)}, not {esp!r}"
        required = [ESP_REQUIRED_SETTING[esp], "WEBHOOK_SECRET"]
        if esp == "mailgun":
            required.append("MAILGUN_WEBHOOK_SIGNING_KEY")
        for name in filter(None, required):
            if not settings.ANYMAIL.get(name):
                return f"ANYMAIL_ESP {esp} needs ANYMAIL_{name}"
        return None
    return f"unknown delivery transport {transport!r} (mx, smtp or anymail)"


def transports_configured() -> list[str]:
    """The transports a deployment means to use: DELIVERY_TRANSPORT, and the relay or the ESP
    when their settings are given (for accounts overriding it)."""
    configured = [settings.DELIVERY_TRANSPORT]
    if settings.SMTP_RELAY_HOST:
        configured.append(DeliveryTransport.SMTP)
    if settings.ANYMAIL_ESP:
        configured.append(DeliveryTransport.ANYMAIL)
    return list(dict.fromkeys(configured))
