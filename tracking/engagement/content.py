"""The tracked content of API mail, for the MIME builder."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from tracking.engagement.rewrite import html_add_tracking, text_add_tracking
from tracking.models import Message


@dataclass(frozen=True)
class OutgoingContent:
    html: str
    text: str


def message_tracked_content(message: Message) -> OutgoingContent:
    """The message's HTML with the pixel and click URLs; its text with click URLs only when
    TRACKING_TEXT_LINKS is on."""
    text = message.text_content
    if settings.TRACKING_TEXT_LINKS:
        text = text_add_tracking(text, message_id=message.message_id)
    return OutgoingContent(
        html=html_add_tracking(message.html_content, message_id=message.message_id), text=text
    )
