"""What the message detail shows of a message's opens, clicks and bounces."""

from __future__ import annotations

from typing import Any

from tracking.models import Message

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def message_events(message: Message) -> list[dict[str, Any]]:
    """The message's events, oldest first, each with its human/automated classification.

    Uses `message.events.all()`, so a `prefetch_related("events")` serves it from memory."""
    return [
        {
            "kind": event.kind,
            "time": event.occurred_at.strftime(DATE_FORMAT),
            "ip": event.ip,
            "user_agent": event.user_agent,
            "url": event.url,
            "automated": event.automated,
            "automated_reason": event.automated_reason,
        }
        for event in message.events.all()
    ]
