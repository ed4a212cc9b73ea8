"""Site-wide views: the health check and JSON error pages for the API's paths."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.defaults import page_not_found, server_error


def livez(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers. Touches nothing else, so it is also the trivial
    baseline view of the benchmarks."""
    return JsonResponse({"ok": True})


def healthz(request: HttpRequest) -> JsonResponse:
    """Health: 200 when this process answers and reaches its database (one trivial query),
    503 when the database cannot be reached."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"ok": False, "database": "unavailable"}, status=503)
    return JsonResponse({"ok": True, "database": "ok"})


def api_not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any /rest/ path no route matched: the API's error shape, even with DEBUG on."""
    return JsonResponse({"errors": ["not found"]}, status=404)


def not_found(request: HttpRequest, exception: Exception):
    if request.path.startswith("/rest/"):
        return JsonResponse({"errors": ["not found"]}, status=404)
    return page_not_found(request, exception)


def internal_error(request: HttpRequest):
    if request.path.startswith("/rest/"):
        return JsonResponse({"errors": ["internal error"]}, status=500)
    return server_error(request)
