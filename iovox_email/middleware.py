"""Site-wide middleware: what no view should have to think about.

- `ControlCharactersMiddleware` refuses a request whose path or query holds a control
  character (a NUL, which PostgreSQL cannot store or compare, a line break, ...): no id or
  filter of ours may contain one, so the request is a 400 before any view or query sees it.
  A posted form (the portal, the admin) may not hold a NUL either; its text fields may hold
  line breaks. (The API's JSON bodies are checked by its parser, tracking/api/parsers.py.)
- `DatabaseUnavailableMiddleware` turns a database that cannot be reached into a 503 with
  Retry-After: the API's error shape on /rest/, a plain page elsewhere, never a 500.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

log = logging.getLogger(__name__)

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
UNAVAILABLE = "service unavailable, retry later"
OWN_BODIES = ("/rest/", "/anymail/")


def is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/rest/")


def input_errors(request: HttpRequest) -> list[str]:
    """What is wrong with the request's path, query parameters and posted form, said the
    API's way."""
    errors = []
    if CONTROL.search(request.path_info):
        errors.append("the path cannot contain control characters")
    for name, values in request.GET.lists():
        if CONTROL.search(name):
            errors.append("query parameter names cannot contain control characters")
        elif any(CONTROL.search(value) for value in values):
            errors.append(f"{name} cannot contain control characters")
    # Only a form body is parsed here (as the CSRF check would parse it anyway); the API's
    # views read their own bodies, and so do the ESPs' webhooks (anymail reads the raw body
    # after the form, which Django allows only if nothing parsed the form first).
    if request.method == "POST" and not request.path_info.startswith(OWN_BODIES):
        for name, values in request.POST.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                errors.append(f"{name.replace(chr(0), '')} cannot contain NUL characters")
    return errors


class ControlCharactersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        errors = input_errors(request)
        if not errors:
            return self.get_response(request)
        if is_api(request):
            return JsonResponse({"errors": errors}, status=400)
        return HttpResponse(
            "Bad request: " + "; ".join(errors), status=400, content_type="text/plain"
        )


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception):
        if not isinstance(exception, OperationalError | InterfaceError):
            return None
        log.error("database unavailable for %s %s: %s", request.method, request.path, exception)
        if is_api(request):
            response = JsonResponse({"errors": [UNAVAILABLE]}, status=503)
        else:
            # Rendered without the request: its context processors would query the database.
            response = HttpResponse(render_to_string("503.html"), status=503)
        response["Retry-After"] = str(settings.DATABASE_RETRY_AFTER)
        return response
