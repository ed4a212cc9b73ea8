"""Site-wide views: liveness, readiness, metrics and JSON error pages for the API's paths."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import page_not_found, server_error

from iovox_email.health import readiness, readiness_checks
from iovox_email.metrics import metrics_authorized, metrics_text


def livez(request: HttpRequest) -> JsonResponse:
    """Liveness (/healthz, /livez): the process answers. Touches nothing else (a database
    outage must not get every web process restarted), so it is also the trivial baseline view
    of the benchmarks."""
    return JsonResponse({"ok": True})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database answers and is migrated, the broker and the shared
    cache answer; else 503 naming what failed (iovox_email/health.py)."""
    ok, results = readiness(readiness_checks())
    return JsonResponse({"ok": ok, **results}, status=200 if ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text of this process (of every gunicorn worker in multiprocess mode),
    behind METRICS_TOKEN when one is set."""
    if not metrics_authorized(request.headers.get("Authorization", "")):
        return JsonResponse({"errors": ["a bearer token is required"]}, status=401)
    body, content_type = metrics_text()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


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
