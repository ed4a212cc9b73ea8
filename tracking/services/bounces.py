"""Bounces: a delivery status notification that comes back to a VERP address.

A standard report (RFC 3464, `multipart/report; report-type=delivery-status`) is read with the
standard library's email package: its Action, Status (RFC 3463) and Diagnostic-Code. The many
real-world bounces that are not standard (qmail, old Exchange, Yahoo, ...) are recognised by
flufl.bounce's detectors, which say whether the failure is permanent; their text gives the
codes where it has them. Every failure report is recorded as an attempt (outcome
`received_bounced`) with its codes and `bounce_type` (tracking/bounces.py), and a hard one
puts the address on the account's suppression list.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message as EmailMessage
from email.policy import compat32

from django.db import transaction
from flufl.bounce import all_failures

from tracking.bounces import Bounce, bounce_classify, enhanced_code_in, reply_code_in
from tracking.delivery.state import message_transition
from tracking.delivery.verp import verp_message_id
from tracking.engagement.retention import events_store
from tracking.models import (
    BounceType,
    DeliveryAttempt,
    Disposition,
    EventSource,
    Message,
    SuppressionReason,
    TrackingEvent,
)
from tracking.services.suppressions import suppression_add
from tracking.text import text_safe

log = logging.getLogger(__name__)

SMTP_REPLY = re.compile(r"\b([45]\d\d)[ -]+(?:[45]\.\d{1,3}\.\d{1,3}\b)?.*", re.I)
DETAIL_LIMIT = 2000


@dataclass(frozen=True)
class BounceReport:
    """What a report says of the one recipient its VERP address names."""

    failed: bool
    detail: str  # for status_detail: recipient, action, status, diagnostic
    diagnostic: str = ""  # the remote server's words
    status: str = ""  # RFC 3463 code from the report's Status field
    remote_mta: str = ""
    permanent: bool | None = None


def bounce_process(*, raw: bytes, rcpt_to: str) -> Message | None:
    """Handle a bounce sent to `rcpt_to`. Returns the message it names, or None when the
    address is not a valid VERP address of ours (unknown message, forged signature).

    A failure report is recorded as an attempt with its codes and bounce type; it marks the
    message `received_bounced` if it was `sent` (a bounce for a message in any other state
    moves nothing), and a hard bounce suppresses the address. A report that only says
    "delayed" or "delivered" changes nothing.
    """
    message_uuid = verp_message_id(rcpt_to)
    if message_uuid is None:
        return None
    message = Message.objects.filter(message_id=message_uuid).first()
    if message is None:
        return None
    report = bounce_read(message_from_bytes(raw, policy=compat32), message.recipient_address)
    # Text from a stranger, kept and shown: NULs and the like made safe.
    report = dataclasses.replace(
        report,
        detail=text_safe(report.detail),
        diagnostic=text_safe(report.diagnostic),
        remote_mta=text_safe(report.remote_mta),
    )
    if not report.failed:
        log.info("report for message %s is not a failure: %s", message.message_id, report.detail)
        return message
    bounce = bounce_classify(
        smtp_code=reply_code_in(report.diagnostic),
        enhanced_code=report.status,
        text=report.diagnostic or report.detail,
        permanent=report.permanent,
    )
    message_bounce_record(
        message=message,
        bounce=bounce,
        text=report.diagnostic or report.detail,
        detail=report.detail,
        remote_mta=report.remote_mta,
    )
    return message


@transaction.atomic
def message_bounce_record(
    *,
    message: Message,
    bounce: Bounce,
    text: str,
    detail: str,
    remote_mta: str,
    source: str = EventSource.OURS,
    waiting_to: str | None = None,
) -> None:
    """Record a failure reported after the message left us (a DSN, or an ESP's bounce event):
    a bounce event, an attempt with its codes and bounce type, `sent` -> `received_bounced`,
    and the address suppressed when the bounce is hard. `waiting_to` is where a message still
    `queued` goes (an ESP's report on a message it had queued: `undeliverable`); a DSN moves
    nothing but a `sent` message."""
    events_store(
        events=[TrackingEvent(message=message, kind=TrackingEvent.Kind.BOUNCE, source=source)]
    )
    to = Disposition.RECEIVED_BOUNCED
    if message.disposition == Disposition.QUEUED and waiting_to:
        to = waiting_to
    DeliveryAttempt.objects.create(
        message=message,
        mx_host=remote_mta[:253],
        smtp_code=bounce.smtp_code,
        smtp_text=text[:DETAIL_LIMIT],
        enhanced_code=bounce.enhanced_code,
        bounce_type=bounce.bounce_type,
        outcome=to,
    )
    if message.disposition == Disposition.SENT or to != Disposition.RECEIVED_BOUNCED:
        message_transition(
            message=message,
            to=to,
            event={
                "smtp_code": bounce.smtp_code,
                "smtp_text": text,
                "enhanced_code": bounce.enhanced_code,
                "bounce_type": bounce.bounce_type,
            },
            status_detail=detail[:DETAIL_LIMIT],
        )
    if bounce.bounce_type == BounceType.HARD:
        suppression_add(
            account=message.account_id,
            email_address=message.recipient_address,
            reason=SuppressionReason.HARD_BOUNCE,
            smtp_code=bounce.smtp_code,
            enhanced_code=bounce.enhanced_code,
            smtp_text=text,
            message=message,
        )


def bounce_read(report: EmailMessage, recipient: str) -> BounceReport:
    """Read a bounce: its RFC 3464 delivery-status part if it has one, else flufl.bounce's
    detectors and the first SMTP reply in its text."""
    for part in report.walk():
        if part.get_content_type() == "message/delivery-status":
            return _delivery_status(part)
    temporary, permanent = all_failures(report)
    address = recipient.lower().encode()
    found = {a.lower() for a in permanent} | {a.lower() for a in temporary}
    reason = _plain_text_reason(report)
    if found and address not in found:
        log.info("a bounce names other recipients: %s", sorted(found))
    is_permanent = None
    if address in {a.lower() for a in permanent}:
        is_permanent = True
    elif address in {a.lower() for a in temporary}:
        is_permanent = False
    diagnostic = reason if SMTP_REPLY.match(reason) or enhanced_code_in(reason) else ""
    return BounceReport(True, reason, diagnostic=diagnostic, permanent=is_permanent)


def _delivery_status(part: EmailMessage) -> BounceReport:
    # The payload is a list of header blocks: per-message fields, then one per recipient.
    blocks = part.get_payload()
    if not isinstance(blocks, list):
        return BounceReport(True, "unreadable delivery status")
    actions, details = [], []
    diagnostic = status = remote = ""
    reporting = str(blocks[0].get("Reporting-MTA", "")).partition(";")[2].strip()
    for block in blocks[1:] or blocks:
        action = str(block.get("Action", "")).strip().lower()
        if not action:
            continue
        actions.append(action)
        recipient = str(block.get("Final-Recipient", "")).partition(";")[2].strip()
        block_status = str(block.get("Status", "")).strip().split(" ")[0]
        code = str(block.get("Diagnostic-Code", ""))
        block_diagnostic = " ".join(code.partition(";")[2].split()) or " ".join(code.split())
        details.append(" ".join(filter(None, [recipient, action, block_status, block_diagnostic])))
        if action == "failed" and not status:
            status, diagnostic = block_status, block_diagnostic
            remote = str(block.get("Remote-MTA", "")).partition(";")[2].strip()
    failed = not actions or "failed" in actions
    return BounceReport(
        failed,
        "; ".join(details) or "delivery failed",
        diagnostic=diagnostic,
        status=status if re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status) else "",
        remote_mta=remote or reporting,
        permanent=status.startswith("5") if status else None,
    )


def _plain_text_reason(report: EmailMessage) -> str:
    """The first line that looks like an SMTP error in a bounce without a DSN part."""
    for part in report.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True) or b""
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")
        lines = text.split("--- Below this line", 1)[0].splitlines()
        for line in lines:
            match = SMTP_REPLY.search(line)
            if match:
                return " ".join(match.group(0).split())
        for line in lines:  # qmail's "Sorry, no mailbox here by that name. (#5.1.1)"
            if enhanced_code_in(line):
                return " ".join(line.split())
    subject = str(report.get("Subject", "")).strip()
    return f"bounce: {subject}" if subject else "bounce without a delivery status"
