"""One message: all its fields, its timeline and, for a conversation, the whole thread."""

from __future__ import annotations

from django.db.models.functions import Length
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from conversations.models import Conversation
from portal.decorators import account_required
from portal.timeline import message_timeline
from tracking import access
from tracking.models import Message

# Shown to the account manager, the message must not phone home: a remote image or a click in
# the preview would hit the tracking pixel or a click URL and count as the recipient's open.
# The frame is sandboxed (no scripts, no popups) and this policy blocks every fetch but inline
# images; links open as popups, which the sandbox refuses.
PREVIEW_HEAD = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "style-src 'unsafe-inline'; img-src data:; font-src data:\">"
    '<base target="_blank">'
)


@account_required
def message_detail(request: HttpRequest, message_id: str) -> HttpResponse:
    message = access.get_message_for_account(request.account, message_id)
    attempts = list(message.attempts.all())
    events = list(message.events.all())
    attachments = message.attachments.defer("content").annotate(size=Length("content"))
    thread, conversation = [], None
    if message.conversation_id:
        thread = (
            Message.objects.for_account(request.account)
            .filter(conversation_id=message.conversation_id)
            .select_related("link")
            .order_by("receive_date", "pk")
        )
        conversation = Conversation.objects.filter(
            account=request.account, conversation_id=message.conversation_id
        ).first()
    return render(
        request,
        "portal/message_detail.html",
        {
            "message": message,
            "preview": PREVIEW_HEAD + message.html_content if message.html_content else "",
            "timeline": message_timeline(message, attempts, events),
            "attachments": attachments,
            "thread": thread,
            "conversation": conversation,
        },
    )
