"""What an ESP reports about the messages it delivered for us (anymail's tracking webhooks,
/anymail/<esp>/tracking/), applied as our own events are (docs/transports.md):

  delivered                   `queued` -> `sent`
  deferred                    stays `queued` (the ESP retries), the reason kept
  bounced, rejected, failed   `sent` -> `received_bounced`, `queued` -> `undeliverable`, as a
                              bounce: its codes classified, a hard one suppressed
  complained                  the address suppressed (`complaint`), an `email.complained` event
  opened, clicked             an open or a click, marked as the ESP's (`source` esp)

An event for a message we do not know (by the id the ESP gave it), or one seen before (a
replay, by the ESP's event id, for REPLAY_WINDOW), changes nothing and is counted
(EspWebhookRefusal); the ESP still gets its 200, so it does not send it again.
"""

from __future__ import annotations

import logging

from anymail.signals import AnymailTrackingEvent, tracking
from django.core.cache import cache
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from tracking.bounces import bounce_classify, reply_code_in
from tracking.delivery.state import message_transition
from tracking.engagement.recorder import Hit, tracking_events_write
from tracking.events import EventDraft, events_emit
from tracking.models import (
    DeliveryAttempt,
    Disposition,
    EspWebhookRefusal,
    EventSource,
    EventType,
    Message,
    SuppressionReason,
    TrackingEvent,
)
from tracking.services.bounces import message_bounce_record
from tracking.services.suppressions import suppression_add
from tracking.text import text_safe

log = logging.getLogger(__name__)

REPLAY_WINDOW = 7 * 24 * 3600  # seconds an ESP's event id is remembered
FAILURES = {"bounced", "rejected", "failed"}


@receiver(tracking, dispatch_uid="iovox-esp-tracking")
def esp_event_received(sender, event: AnymailTrackingEvent, esp_name: str, **kwargs) -> None:
    esp_event_apply(esp=esp_name.lower().replace(" ", "_"), event=event)


def esp_event_apply(*, esp: str, event: AnymailTrackingEvent) -> str:
    """Apply one ESP event to its message; what was done ("applied", "ignored", "replay",
    "unknown_message")."""
    seen = f"esp-event:{esp}:{event.event_id}" if event.event_id else None
    if seen and not cache.add(seen, 1, REPLAY_WINDOW):
        EspWebhookRefusal.count_one(esp=esp, reason="replay", detail=str(event.event_id))
        return "replay"
    try:
        return _apply(esp, event)
    except Exception:
        if seen:
            cache.delete(seen)  # not applied: the ESP's retry of it is no replay
        raise


def _apply(esp: str, event: AnymailTrackingEvent) -> str:
    message = _message(event.message_id)
    if message is None:
        EspWebhookRefusal.count_one(
            esp=esp, reason="unknown_message", detail=str(event.message_id or "")
        )
        return "unknown_message"
    kind = event.event_type
    if kind == "delivered":
        _delivered(esp, message, event)
    elif kind == "deferred":
        _deferred(esp, message, event)
    elif kind in FAILURES:
        _failed(esp, message, event)
    elif kind == "complained":
        _complained(message, event)
    elif kind in ("opened", "clicked"):
        _engaged(message, event)
    else:
        return "ignored"
    return "applied"


def _message(esp_message_id: str | None) -> Message | None:
    """The message the ESP's id names (stored without the angle brackets some ESPs add)."""
    key = (esp_message_id or "").strip().strip("<>")
    if not key:
        return None
    return Message.objects.filter(esp_message_id=key).first()


def _reply_text(esp: str, event: AnymailTrackingEvent) -> str:
    words = event.mta_response or event.description or event.reject_reason or event.event_type
    return text_safe(f"{esp}: {event.event_type}: {words}")[:2000]


def _delivered(esp: str, message: Message, event: AnymailTrackingEvent) -> None:
    if message.disposition != Disposition.QUEUED:
        return  # sent already (an ESP that says "sent" at once), or ended otherwise
    text = _reply_text(esp, event)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            message=message, mx_host=esp, smtp_text=text, outcome=Disposition.SENT
        )
        message_transition(
            message=message,
            to=Disposition.SENT,
            delivery_date=event.timestamp or timezone.now(),
            last_smtp_response=text,
        )


def _deferred(esp: str, message: Message, event: AnymailTrackingEvent) -> None:
    if message.disposition != Disposition.QUEUED:
        return
    text = _reply_text(esp, event)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            message=message,
            mx_host=esp,
            smtp_code=reply_code_in(text),
            smtp_text=text,
            outcome=Disposition.QUEUED,
        )
        # The ESP retries it; nothing of ours is due.
        message_transition(
            message=message, to=Disposition.QUEUED, next_attempt_at=None, last_smtp_response=text
        )


def _failed(esp: str, message: Message, event: AnymailTrackingEvent) -> None:
    if message.disposition not in (Disposition.QUEUED, Disposition.SENT):
        return
    text = _reply_text(esp, event)
    # A bounce is the recipient's server refusing; a rejection or failure is the ESP's own
    # refusal to send (its suppression list, a policy), so permanent too.
    bounce = bounce_classify(smtp_code=reply_code_in(text), text=text, permanent=True)
    message_bounce_record(
        message=message,
        bounce=bounce,
        text=text,
        detail=text,
        remote_mta=esp,
        source=EventSource.ESP,
        waiting_to=Disposition.UNDELIVERABLE,
    )


@transaction.atomic
def _complained(message: Message, event: AnymailTrackingEvent) -> None:
    suppression_add(
        account=message.account_id,
        email_address=message.recipient_address,
        reason=SuppressionReason.COMPLAINT,
        message=message,
    )
    occurred = event.timestamp or timezone.now()
    events_emit(
        [
            EventDraft(
                message.account_id,
                EventType.COMPLAINED,
                message.pk,
                {"event": {"occurred_date": occurred.strftime("%Y-%m-%d %H:%M:%S")}},
            )
        ]
    )


def _engaged(message: Message, event: AnymailTrackingEvent) -> None:
    kind = TrackingEvent.Kind.OPEN if event.event_type == "opened" else TrackingEvent.Kind.CLICK
    hit = Hit(
        kind=kind,
        message_id=message.message_id,
        occurred_at=event.timestamp or timezone.now(),
        method="GET",
        ip=None,
        user_agent=text_safe(event.user_agent or ""),
        url=text_safe(event.click_url or "") if kind == TrackingEvent.Kind.CLICK else "",
        source=EventSource.ESP,
    )
    tracking_events_write(hits=[hit])
