"""The ESPs' webhooks, /anymail/<esp>/tracking/ and /anymail/<esp>/inbound/: anymail's own
views for the ESPs we deliver through (tracking/delivery/transports.py), each wrapped so that
what it refuses is counted (EspWebhookRefusal) and nothing an ESP (or anyone) posts ends in a
500: a bad signature or basic auth is a 400, as anymail answers; a body anymail cannot read, a
400; our own failure (the database away), a 503 that the ESP retries.

Basic auth with ANYMAIL_WEBHOOK_SECRET is required (tracking.E010), and Mailgun's signature
is checked with ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY as well.
"""

from __future__ import annotations

import logging

from anymail.exceptions import AnymailError, AnymailWebhookValidationFailure
from anymail.webhooks.amazon_ses import (
    AmazonSESInboundWebhookView,
    AmazonSESTrackingWebhookView,
)
from anymail.webhooks.mailgun import MailgunInboundWebhookView, MailgunTrackingWebhookView
from anymail.webhooks.postmark import PostmarkInboundWebhookView, PostmarkTrackingWebhookView
from anymail.webhooks.sendgrid import SendGridInboundWebhookView, SendGridTrackingWebhookView
from anymail.webhooks.sparkpost import (
    SparkPostInboundWebhookView,
    SparkPostTrackingWebhookView,
)
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from tracking.models import EspWebhookRefusal

log = logging.getLogger(__name__)

VIEWS = {
    "mailgun": (MailgunTrackingWebhookView, MailgunInboundWebhookView),
    "postmark": (PostmarkTrackingWebhookView, PostmarkInboundWebhookView),
    "sendgrid": (SendGridTrackingWebhookView, SendGridInboundWebhookView),
    "amazon_ses": (AmazonSESTrackingWebhookView, AmazonSESInboundWebhookView),
    "sparkpost": (SparkPostTrackingWebhookView, SparkPostInboundWebhookView),
}
# What a body anymail cannot make sense of raises in its parsers (an AnymailError: an SNS
# message of an unknown type, say).
MALFORMED = (
    AnymailError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    UnicodeError,
)


class EspWebhookRetry(Exception):
    """Raised by a receiver for what may pass later (an inbound limit): a 503, which the ESP
    posts again."""


def counted(view, esp: str):
    """`view`, its refusals counted, never a 500."""

    @csrf_exempt
    def webhook(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
            # Without it anymail would take unauthenticated posts (with a warning).
            EspWebhookRefusal.count_one(esp=esp, reason="not_configured")
            return HttpResponse("ANYMAIL_WEBHOOK_SECRET is not set", status=403)
        try:
            return view(request, *args, **kwargs)
        except AnymailWebhookValidationFailure as e:
            EspWebhookRefusal.count_one(esp=esp, reason="bad_signature", detail=str(e))
            return HttpResponse("webhook validation failed", status=400)
        except ImproperlyConfigured as e:
            log.error("the %s webhook is not configured: %s", esp, e)
            EspWebhookRefusal.count_one(esp=esp, reason="not_configured", detail=str(e))
            return HttpResponse("webhook not configured", status=503)
        except EspWebhookRetry as e:
            EspWebhookRefusal.count_one(esp=esp, reason="retry_later", detail=str(e))
            return HttpResponse(str(e), status=503)
        except DatabaseError:
            log.exception("the %s webhook could not be stored; the ESP will retry", esp)
            return HttpResponse("try again later", status=503)
        except MALFORMED as e:
            log.warning("the %s webhook sent what it cannot read: %r", esp, e)
            EspWebhookRefusal.count_one(esp=esp, reason="malformed", detail=repr(e))
            return HttpResponse("malformed webhook", status=400)

    return webhook


urlpatterns = [
    route
    for esp, (tracking_view, inbound_view) in VIEWS.items()
    for route in (
        path(f"{esp}/tracking/", counted(tracking_view.as_view(), esp)),
        path(f"{esp}/inbound/", counted(inbound_view.as_view(), esp)),
    )
]
# Mailgun posts the raw MIME message to a URL with "mime" in it.
urlpatterns.append(
    path("mailgun/inbound_mime/", counted(MailgunInboundWebhookView.as_view(), "mailgun"))
)
