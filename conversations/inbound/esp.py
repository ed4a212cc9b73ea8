"""Mail an ESP received for us and posted to its inbound webhook (/anymail/<esp>/inbound/):
admitted and stored through the one entry point for raw inbound mail (receive.inbound_receive:
the sender's SPF, DKIM, ARC and DMARC, then the store smtpd uses), so the worker's routing loop
treats it as smtpd's mail: aliases, proxy conversations, reverse addresses, bounces, loop
checks, the limits. A DMARC `reject` failure is stored refused and counted; a DNS failure is a
retry for the ESP.

The ESP is the SMTP client here: the message is stored with `esp:<name>` as its peer (there is
no client address of the sender's to check SPF against: SPF is neutral, and a sender's trust
rests on its DKIM signature), the ESP's envelope sender and recipient as the envelope.
"""

from __future__ import annotations

import logging
import re

from anymail.inbound import AnymailInboundMessage
from anymail.signals import AnymailInboundEvent, inbound
from django.conf import settings
from django.dispatch import receiver
from django.http import HttpRequest

from conversations.inbound.raw_mail import Envelope
from conversations.inbound.receive import inbound_receive
from conversations.inbound.recipients import recipient_resolve
from conversations.models import InboundMessage
from tracking.esp_webhooks import EspWebhookRetry
from tracking.models import EspWebhookRefusal

log = logging.getLogger(__name__)


# Where each ESP's post carries the message as it arrived: Mailgun's and SendGrid's form fields
# (with raw MIME on), Postmark's JSON (with "include raw email content" on).
RAW_FIELDS = {"mailgun": "body-mime", "sendgrid": "email", "postmark": "RawEmail"}
_BARE_LF = re.compile(rb"(?<!\r)\n")


@receiver(inbound, dispatch_uid="iovox-esp-inbound")
def esp_inbound_received(sender, event: AnymailInboundEvent, esp_name: str, **kwargs) -> None:
    esp = esp_name.lower().replace(" ", "_")
    inbound_from_esp(esp=esp, message=event.message, raw=_raw_mime(esp, event))


def inbound_from_esp(
    *, esp: str, message: AnymailInboundMessage, raw: bytes
) -> InboundMessage | None:
    """Store what the ESP posted for routing; the stored row, or None when it is for none of
    our addresses or over a limit that will not pass (counted). A limit that will pass (a
    4xx) raises EspWebhookRetry: the ESP is told to post it again later."""
    if len(raw) > settings.MAX_MESSAGE_SIZE:
        EspWebhookRefusal.count_one(esp=esp, reason="too_large", detail=f"{len(raw)} bytes")
        return None
    recipients = _our_recipients(message)
    if not recipients:
        EspWebhookRefusal.count_one(
            esp=esp, reason="unknown_recipient", detail=str(message.envelope_recipient or "")
        )
        return None
    envelope = Envelope(mail_from=message.envelope_sender or "", helo=esp, peer=f"esp:{esp}")
    outcome = inbound_receive(raw=raw, recipients=recipients, envelope=envelope)
    if isinstance(outcome, str):
        if outcome.startswith("4"):
            raise EspWebhookRetry(outcome)
        EspWebhookRefusal.count_one(esp=esp, reason="refused", detail=outcome)
        return None
    log.info("stored inbound %s from %s for %s", outcome.pk, esp, ", ".join(recipients))
    return outcome


def _raw_mime(esp: str, event: AnymailInboundEvent) -> bytes:
    """The message's bytes as the ESP received them, where its post has them (so DKIM
    signatures still hold and it is forwarded as it came); else anymail's message serialized
    again. CRLF line endings, as SMTP gives them (Postmark's raw uses LF)."""
    source, field = event.esp_event, RAW_FIELDS.get(esp)
    text = None
    if isinstance(source, HttpRequest) and field:
        text = source.POST.get(field)
    elif isinstance(source, dict) and field:
        text = source.get(field)
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else None
    return _BARE_LF.sub(b"\r\n", data or event.message.as_bytes())


def _our_recipients(message: AnymailInboundMessage) -> list[str]:
    """The envelope recipient the ESP names, else the To and Cc addresses: those of ours."""
    if message.envelope_recipient:
        candidates = [a.strip() for a in message.envelope_recipient.split(",")]
    else:
        candidates = [address.addr_spec for address in message.to + message.cc]
    ours = (recipient_resolve(candidate) for candidate in candidates if candidate)
    return list(dict.fromkeys(recipient.address for recipient in ours if recipient))
