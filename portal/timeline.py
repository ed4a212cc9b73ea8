"""What happened to a message, in order: received, each delivery attempt with the remote
server's reply, sent or bounced, each open and click (a person's or a machine's)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tracking.models import DeliveryAttempt, Disposition, EventSource, Message, TrackingEvent

FINAL_WORDS = {
    Disposition.NO_MX_RECORD: "No MX record for the recipient's domain",
    Disposition.NO_RULES: "No rules: the link has no email destination",
    Disposition.RULE_ERROR: "Rule error: the link's rule could not be applied",
    Disposition.EXPIRED: "Expired: not delivered after many attempts",
}


@dataclass(frozen=True)
class Step:
    at: datetime | None
    kind: str  # CSS hook: received, attempt, sent, failed, bounce, open, click
    title: str
    detail: str = ""
    badge: str = ""  # "Human" / "Automated"
    note: str = ""


def message_timeline(
    message: Message, attempts: list[DeliveryAttempt], events: list[TrackingEvent]
) -> list[Step]:
    """Delivery in causal order (received, the attempts as made, sent: the worker stamps the
    delivery date a moment before it records the attempt, so clock order would put "Sent"
    before the attempt that sent it), then what came back (opens, clicks, bounces) in time
    order, then the final word on a message that was never delivered."""
    steps = [Step(message.receive_date, "received", "Received", note=_direction(message))]
    steps += [_attempt_step(a) for a in attempts if a.outcome != Disposition.RECEIVED_BOUNCED]
    reports = [a for a in attempts if a.outcome == Disposition.RECEIVED_BOUNCED]
    reported = bool(reports)
    if message.delivery_date:
        steps.append(
            Step(
                message.delivery_date,
                "sent",
                "Sent",
                note=f"Accepted by the remote server for {message.recipient_address}",
            )
        )
    for event in sorted(events, key=lambda e: (e.occurred_at, e.pk)):
        if event.kind == TrackingEvent.Kind.BOUNCE:
            # The bounce's codes are on its report's attempt row; its reason on the message.
            if not reported:
                steps.append(Step(event.occurred_at, "bounce", "Bounced", message.status_detail))
        else:
            steps.append(_event_step(event))
    steps += [_attempt_step(report) for report in reports]
    if message.disposition in FINAL_WORDS:
        steps.append(Step(None, "failed", FINAL_WORDS[message.disposition], message.status_detail))
    return steps


def _direction(message: Message) -> str:
    return message.get_direction_display()


def _attempt_step(attempt: DeliveryAttempt) -> Step:
    reply = " ".join(str(p) for p in (attempt.smtp_code, attempt.smtp_text) if p)
    kind = {
        Disposition.SENT: "attempt-ok",
        Disposition.QUEUED: "attempt-retry",
        Disposition.RECEIVED_BOUNCED: "bounce",
    }.get(attempt.outcome, "failed")
    if attempt.outcome == Disposition.RECEIVED_BOUNCED:
        title = f"Bounce report from {attempt.mx_host}" if attempt.mx_host else "Bounce report"
    else:
        title = f"Delivery attempt {f'to {attempt.mx_host}' if attempt.mx_host else ''}".strip()
    note = attempt.get_outcome_display()
    if attempt.bounce_type:
        code = f" {attempt.enhanced_code}" if attempt.enhanced_code else ""
        note = f"{note} · {attempt.get_bounce_type_display()}{code}"
    return Step(attempt.attempted_at, kind, title, reply or "No reply", note=note)


def _event_step(event: TrackingEvent) -> Step:
    title = "Opened" if event.kind == TrackingEvent.Kind.OPEN else "Clicked"
    detail = event.url if event.kind == TrackingEvent.Kind.CLICK else ""
    who = " ".join(p for p in (event.ip or "", event.user_agent[:120]) if p)
    badge = "Automated" if event.automated else "Human"
    source = "reported by the ESP" if event.source == EventSource.ESP else ""
    return Step(
        event.occurred_at,
        event.kind,
        title,
        detail,
        badge=badge,
        note=" — ".join(p for p in (event.automated_reason, who, source) if p),
    )
