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
            "timeline": message_timeline(message, attempts, events),
            "attachments": attachments,
            "thread": thread,
            "conversation": conversation,
        },
    )
