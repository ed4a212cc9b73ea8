"""One message: all its fields, its timeline and, for a conversation, the whole thread."""

from __future__ import annotations

from csp.decorators import csp
from django.conf import settings
from django.core.paginator import Paginator
from django.db.models.functions import Length
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_sameorigin

from conversations.models import Conversation
from portal.decorators import account_required
from portal.timeline import message_timeline
from tracking import access
from tracking.engagement.events import message_event_counts
from tracking.models import Message

# Shown to the account manager, the message must not phone home: a remote image or a click in
# the preview would hit the tracking pixel or a click URL and count as the recipient's open.
# It is served on its own URL with a policy of its own (the page's strict policy would also
# refuse the message's inline styles, and a frame's srcdoc inherits it): every fetch is
# blocked but inline images, and the document is sandboxed (no scripts, forms or popups)
# whether framed by the message page, which sandboxes it too, or opened on its own. Links
# open as popups, which the sandbox refuses.
PREVIEW_POLICY = {
    "default-src": "'none'",
    "style-src": "'unsafe-inline'",
    "img-src": "data:",
    "font-src": "data:",
    "base-uri": "'none'",
    "form-action": "'none'",
    "frame-ancestors": "'self'",
    "sandbox": [True],
}
PREVIEW_HEAD = '<base target="_blank">'
# Opens and clicks on one page of the timeline (a message keeps at most
# TRACKING_EVENTS_KEPT_FIRST + TRACKING_EVENTS_KEPT_LAST of them).
EVENTS_PER_PAGE = 50


@account_required
def message_detail(request: HttpRequest, message_id: str) -> HttpResponse:
    message = access.get_message_for_account(request.account, message_id)
    attempts = list(message.attempts.all())
    events = Paginator(message.events.all(), EVENTS_PER_PAGE).get_page(request.GET.get("page"))
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
            "timeline": message_timeline(message, attempts, list(events)),
            "events": events,
            "counts": message_event_counts(message),
            "settings_kept_first": settings.TRACKING_EVENTS_KEPT_FIRST,
            "settings_kept_last": settings.TRACKING_EVENTS_KEPT_LAST,
            "attachments": attachments,
            "thread": thread,
            "conversation": conversation,
            "authentication": message.sender_authentication(),
        },
    )


@xframe_options_sameorigin
@csp(PREVIEW_POLICY)
@account_required
def message_preview(request: HttpRequest, message_id: str) -> HttpResponse:
    """The message's HTML, for the message page's sandboxed frame."""
    message = access.get_message_for_account(request.account, message_id)
    if message.content_purged_at is not None:
        return HttpResponse("Content no longer kept.", content_type="text/plain")
    return HttpResponse(PREVIEW_HEAD + message.html_content, content_type="text/html")
