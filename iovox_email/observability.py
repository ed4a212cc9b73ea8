"""What every request carries for an operator: its request id, in each log line written while
it runs and in the X-Request-ID response header (taken from the load balancer's X-Request-ID
when it is a sane token, else made here), and its count and latency in /metrics by route
pattern (never the path itself: that holds ids)."""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from django.http import HttpRequest, HttpResponse

from iovox_email.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS

# What log lines of this request or task say about it: request_id, message_id, account.
log_context: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "log_context", default=None
)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# The probes are scraped every few seconds: not counted as traffic.
UNCOUNTED = frozenset({"healthz", "livez", "readyz", "metrics"})


def log_context_add(**values: object) -> None:
    """Add `values` (the account, once a request has authenticated) to what the rest of this
    request's log lines carry."""
    log_context.set({**(log_context.get() or {}), **values})


class LogContextFilter(logging.Filter):
    """Puts the current log context on every record (the JSON formatter writes it out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in (log_context.get() or {}).items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TaskChatterFilter(logging.Filter):
    """django-q2's INFO lines about each task it enqueues, schedules, pushes, runs or
    records are made DEBUG records (and dropped unless DEBUG is logged); its other lines are
    left alone."""

    CHATTY_MODULES = frozenset({"scheduler", "pusher", "worker", "monitor", "tasks"})

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.module not in self.CHATTY_MODULES:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def route_of(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.route or match.view_name or "unmatched"


class RequestObservabilityMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get("X-Request-ID", "")
        request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # Not reset at the end: Django logs a 4xx or 5xx answer after every middleware has
        # returned, and that line wants the id too. The next request of the thread sets its own.
        log_context.set({"request_id": request_id})
        started = time.perf_counter()
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        route = route_of(request)
        if route not in UNCOUNTED:
            method = request.method if request.method in KNOWN_METHODS else "other"
            HTTP_REQUESTS.labels(route=route, method=method, status=str(response.status_code)).inc()
            HTTP_REQUEST_DURATION.labels(route=route, method=method).observe(
                time.perf_counter() - started
            )
        return response


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
