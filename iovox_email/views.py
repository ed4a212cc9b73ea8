"""Site-wide views: the health check and JSON error pages for the API's paths."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.defaults import page_not_found, server_error


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness probe; also the trivial baseline view of the benchmarks."""
    return JsonResponse({"ok": True})


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
