"""What the message detail shows of a message's opens, clicks and bounces."""

from __future__ import annotations

from typing import Any

from tracking.models import Message

DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


def message_events(message: Message) -> list[dict[str, Any]]:
    """The message's events, oldest first, each with its human/automated classification.
    Empty fields are left out, like the spec's search results do (a human open has no
    `automated_reason`, an open no `url`).

    Uses `message.events.all()`, so a `prefetch_related("events")` serves it from memory."""
    return [
        {
            name: value
            for name, value in {
                "kind": event.kind,
                "occurred_at": event.occurred_at.strftime(DATE_FORMAT),
                "ip": event.ip,
                "user_agent": event.user_agent,
                "url": event.url,
                "automated": event.automated,
                "automated_reason": event.automated_reason,
            }.items()
            if value not in (None, "")
        }
        for event in message.events.all()
    ]
