"""Bounces: a delivery status notification (RFC 3464) that comes back to a VERP address."""

from __future__ import annotations

import logging
import re
from email import message_from_bytes
from email.message import Message as EmailMessage
from email.policy import compat32

from django.db import transaction

from tracking.delivery.state import message_transition
from tracking.delivery.verp import verp_message_id
from tracking.engagement.retention import events_store
from tracking.models import Disposition, Message, TrackingEvent
from tracking.text import text_safe

log = logging.getLogger(__name__)

SMTP_REPLY = re.compile(r"\b([45]\d\d)[ -]+(?:[45]\.\d{1,3}\.\d{1,3}\b)?.*", re.I)
DETAIL_LIMIT = 2000


def bounce_process(*, raw: bytes, rcpt_to: str) -> Message | None:
    """Handle a bounce sent to `rcpt_to`. Returns the message it names, or None when the
    address is not a valid VERP address of ours (unknown message, forged signature).

    A failure report marks the message `received_bounced` if it was `sent`; a bounce for a
    message in any other state is recorded as an event without moving it. A report that only
    says "delayed" or "delivered" changes nothing.
    """
    message_uuid = verp_message_id(rcpt_to)
    if message_uuid is None:
        return None
    message = Message.objects.filter(message_id=message_uuid).first()
    if message is None:
        return None
    failed, diagnostic = bounce_diagnostic(message_from_bytes(raw, policy=compat32))
    diagnostic = text_safe(diagnostic)
    if not failed:
        log.info("report for message %s is not a failure: %s", message.message_id, diagnostic)
        return message
    with transaction.atomic():
        events_store(events=[TrackingEvent(message=message, kind=TrackingEvent.Kind.BOUNCE)])
        for _ in range(3):  # a claim may bump state_version under us; read it again
            if message.disposition != Disposition.SENT:
                break
            if message_transition(
                message=message,
                to=Disposition.RECEIVED_BOUNCED,
                status_detail=diagnostic[:DETAIL_LIMIT],
            ):
                break
            message.refresh_from_db()
    return message


def bounce_diagnostic(report: EmailMessage) -> tuple[bool, str]:
    """(is it a failure?, what went wrong) from a DSN, or from a plain-text bounce."""
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            return _delivery_status(part)
    return True, _plain_text_reason(report)


def _delivery_status(part: EmailMessage) -> tuple[bool, str]:
    # The payload is a list of header blocks: per-message fields, then one per recipient.
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return True, "unreadable delivery status"
    actions, details = [], []
    for block in blocks[1:] or blocks:
        action = str(block.get("Action", "")).strip().lower()
        if not action:
            continue
        actions.append(action)
        recipient = str(block.get("Final-Recipient", "")).partition(";")[2].strip()
        status = str(block.get("Status", "")).strip()
        diagnostic = " ".join(
            str(block.get("Diagnostic-Code", "")).partition(";")[2].split()
        ) or " ".join(str(block.get("Diagnostic-Code", "")).split())
        details.append(" ".join(filter(None, [recipient, action, status, diagnostic])))
    failed = not actions or "failed" in actions
    return failed, "; ".join(details) or "delivery failed"


def _plain_text_reason(report: EmailMessage) -> str:
    """The first line that looks like an SMTP error in a bounce without a DSN part."""
    for part in report.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True) or b""
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")
        for line in text.splitlines():
            match = SMTP_REPLY.search(line)
            if match:
                return " ".join(match.group(0).split())
    subject = str(report.get("Subject", "")).strip()
    return f"bounce: {subject}" if subject else "bounce without a delivery status"
