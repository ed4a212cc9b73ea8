"""Every Prometheus metric we export (prometheus-client), and the `/metrics` text of a process.

Labels are bounded sets (a route pattern, an outcome, a transport, a reason code), never a
message id or an address. Under gunicorn, or in the worker (django-q2 runs tasks in child
processes), the values live in files under PROMETHEUS_MULTIPROC_DIR and `/metrics` adds up
every process's (prometheus-client's multiprocess mode); `manage.py worker` makes that
directory itself when it is not set. docs/operations.md lists the metrics and what to alert on.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterator

from django.conf import settings
from django.utils import timezone
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# --- Web ------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "iovox_http_requests_total",
    "HTTP requests answered, by route pattern, method and status code.",
    ["route", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "iovox_http_request_duration_seconds",
    "Time to answer an HTTP request, by route pattern and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SENDS_ACCEPTED = Counter(
    "iovox_sends_accepted_total",
    "Messages accepted for delivery, by direction (api, inbound, ...).",
    ["direction"],
)
TRACKING_HITS = Counter(
    "iovox_tracking_hits_total",
    "Tracking hits answered, by kind (open, click) and agent (human, automated).",
    ["kind", "agent"],
)

# --- Worker ---------------------------------------------------------------------------------
DELIVERIES = Counter(
    "iovox_deliveries_total",
    "Delivery outcomes (sent, queued for a retry, undeliverable, ...), by transport.",
    ["outcome", "transport"],
)
ACCEPTED_TO_SENT = Histogram(
    "iovox_delivery_accepted_to_sent_seconds",
    "Time from a message's acceptance to its `sent` outcome, by transport.",
    ["transport"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)

# --- Inbound SMTP ---------------------------------------------------------------------------
INBOUND_MESSAGES = Counter(
    "iovox_inbound_messages_total",
    "Inbound SMTP messages by outcome (accepted, refused, deferred) and reason.",
    ["outcome", "reason"],
)
SMTP_CONNECTIONS_OPEN = Gauge(
    "iovox_smtp_connections_open",
    "Inbound SMTP connections open now.",
    multiprocess_mode="livesum",
)


# --- Retention ------------------------------------------------------------------------------
PURGED_ROWS = Counter(
    "iovox_purged_rows_total",
    "Rows deleted (or contents emptied) by the purge, by kind.",
    ["kind"],
)


class BacklogCollector(Collector):
    """What is waiting, read from the database at scrape time (the worker exports these; they
    are the whole system's, so one process is enough)."""

    NAMES = (
        "iovox_messages_due",
        "iovox_oldest_due_message_age_seconds",
        "iovox_webhook_deliveries_pending",
    )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Min

        from tracking.delivery.claims import due
        from tracking.models import Disposition, WebhookDelivery
        from tracking.models.events import WebhookDeliveryStatus

        now = timezone.now()
        received = due(Disposition.RECEIVED, now)
        queued = due(Disposition.QUEUED, now)
        count = received.count() + queued.count()
        # How long the longest-waiting due message has been due: a new one since it was
        # accepted, a retry since its attempt fell due.
        since = [
            received.aggregate(at=Min("receive_date"))["at"],
            queued.aggregate(at=Min("next_attempt_at"))["at"],
        ]
        oldest = min((at for at in since if at is not None), default=None)
        yield GaugeMetricFamily(
            "iovox_messages_due", "Messages due for a delivery attempt now.", value=count
        )
        yield GaugeMetricFamily(
            "iovox_oldest_due_message_age_seconds",
            "How long the longest-waiting due message has been due (0: none).",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )
        pending = WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING)
        yield GaugeMetricFamily(
            "iovox_webhook_deliveries_pending",
            "Webhook deliveries waiting to be posted.",
            value=pending.count(),
        )


def metrics_authorized(authorization: str) -> bool:
    """The request's Authorization header carries METRICS_TOKEN (always true without one)."""
    token = settings.METRICS_TOKEN
    if not token:
        return True
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def metrics_text(*, backlog: bool = False) -> tuple[bytes, str]:
    """This process's metrics (every process's of its group in multiprocess mode), plus the
    backlog gauges when asked; (body, content type)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if backlog:
        extra = CollectorRegistry()
        extra.register(BacklogCollector())
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST


def exported_names() -> set[str]:
    """The name of every sample we export (a counter's `_total`, a histogram's `_bucket`,
    `_sum` and `_count`, ...): what a dashboard or an alert may refer to."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gauge": ("",),
    }
    names = set(BacklogCollector.NAMES)
    for family in REGISTRY.collect():
        if family.name.startswith("iovox_"):
            names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names
