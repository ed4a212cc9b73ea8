"""The pixel and the click redirect. Both answer fast and never fail for the reader: a hit
that cannot be recorded (database down) is logged, and the GIF or the redirect still goes
out. A token that does not verify is a 404, so nothing here redirects to a URL we did not
sign."""

from __future__ import annotations

import base64
import ipaddress
import logging
import uuid

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from tracking.engagement import tokens
from tracking.engagement.recorder import Hit, tracking_hit_record
from tracking.models import TrackingEvent

logger = logging.getLogger(__name__)

# A transparent 1x1 GIF89a (42 bytes).
PIXEL_GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = "no-cache, no-store, must-revalidate, max-age=0, private"


# csrf_exempt: these take GET and HEAD only; any other method is a 405, never the CSRF
# middleware's 403 (which would claim a token was missing where none can help).
@csrf_exempt
@require_safe
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    message_id = tokens.open_token_message_id(token)
    if message_id is None:
        raise Http404("unknown tracking pixel")
    _record(request, kind=TrackingEvent.Kind.OPEN, message_id=message_id, url="")
    response = HttpResponse(
        b"" if request.method == "HEAD" else PIXEL_GIF, content_type="image/gif"
    )
    response["Content-Length"] = str(len(PIXEL_GIF))
    _no_store(response)
    return response


@csrf_exempt
@require_safe
def click_redirect(request: HttpRequest, token: str) -> HttpResponse:
    target = tokens.click_token_target(token)
    # Tokens are only ever signed for http(s) URLs; checked again so a leaked key cannot turn
    # this into a javascript: or data: redirect.
    if target is None or not target.url.lower().startswith(("http://", "https://")):
        raise Http404("unknown tracking link")
    _record(request, kind=TrackingEvent.Kind.CLICK, message_id=target.message_id, url=target.url)
    response = HttpResponseRedirect(target.url)
    _no_store(response)
    return response


def _record(request: HttpRequest, *, kind: str, message_id: uuid.UUID, url: str) -> None:
    hit = Hit(
        kind=kind,
        message_id=message_id,
        occurred_at=timezone.now(),
        method=request.method or "GET",
        ip=client_ip(request),
        user_agent=request.headers.get("User-Agent", ""),
        url=url,
    )
    try:
        tracking_hit_record(hit=hit)
    except Exception:
        # The reader gets the GIF or the redirect whatever happens to the record.
        logger.exception("could not record a %s of message %s", kind, message_id)


def _no_store(response: HttpResponse) -> None:
    # Every open must reach us: no browser, proxy or mail reader may answer from a cache.
    response["Cache-Control"] = NO_CACHE
    response["Pragma"] = "no-cache"
    response["Expires"] = "Thu, 01 Jan 1970 00:00:00 GMT"
    response["X-Robots-Tag"] = "noindex, nofollow"


def client_ip(request: HttpRequest) -> str | None:
    """The reader's address. X-Forwarded-For is believed only when the connection comes from
    a trusted proxy (TRACKING_TRUSTED_PROXIES), read right to left past our own proxies, so a
    reader cannot forge it."""
    remote = _address(request.META.get("REMOTE_ADDR", ""))
    if remote is None or not _trusted(remote):
        return str(remote) if remote else None
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    for part in reversed([p.strip() for p in forwarded.split(",") if p.strip()]):
        address = _address(part)
        if address is None:
            break
        if not _trusted(address):
            return str(address)
        remote = address
    return str(remote)


def _address(text: str):
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address) -> bool:
    return any(
        address.version == network.version and address in network
        for network in settings.TRACKING_TRUSTED_PROXIES
    )
