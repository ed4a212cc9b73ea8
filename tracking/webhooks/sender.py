"""Posting events to webhook endpoints: the worker's webhook loop.

Each turn of the loop (`WebhookSender.turn`):
1. turns new outbox events into deliveries, one per enabled endpoint that wants the event
   (`events_dispatch`);
2. takes the next endpoint with due deliveries (in turn, wrapping round) that has fewer than
   WEBHOOK_ENDPOINT_CONCURRENCY batches in flight, claims up to WEBHOOK_BATCH_SIZE of its due
   deliveries by conditional UPDATE, and hands them to one of WEBHOOK_CONNECTIONS threads.

A thread posts its batch one delivery after another over one keep-alive connection, each post
signed and limited to WEBHOOK_TIMEOUT seconds. A 2xx is delivered; anything else is retried
WEBHOOK_RETRY_SCHEDULE[n] seconds after the n-th attempt and failed after the last. A timeout or
a refused connection ends the batch: the deliveries not yet tried wait until the failed one's
next attempt, so an endpoint that is down costs one timeout per retry, not one per event. An
endpoint that has failed for WEBHOOK_DISABLE_AFTER seconds without a success is disabled, and
its account told in the portal.

So a slow or dead endpoint holds at most its own few threads; other endpoints and the mail
pipeline (other loops, other worker processes) never wait for it. A claim lapses if its worker
dies, and those deliveries are posted again with the same `webhook-id` (at least once).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from requests import RequestException
from requests_hardened import Config, HTTPSession

from tracking.events import event_payload
from tracking.models import (
    TEST_EVENT_TYPE,
    Account,
    Event,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from tracking.webhooks.addresses import WebhookUrlError, webhook_url_check
from tracking.webhooks.signing import signature_headers

log = logging.getLogger(__name__)

DISPATCH_LIMIT = 1000
RESPONSE_KEPT = 500
USER_AGENT = "iovox-webhooks/1"
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def events_dispatch(*, limit: int = DISPATCH_LIMIT) -> int:
    """Make the deliveries of up to `limit` new events; how many events were handled."""
    now = timezone.now()
    with transaction.atomic():
        events = list(
            Event.objects.filter(dispatched=False)
            .select_for_update(skip_locked=True)
            .order_by("pk")
            .only("pk", "account_id", "type", "created_at")[:limit]
        )
        if not events:
            return 0
        endpoints: dict[int, list[WebhookEndpoint]] = defaultdict(list)
        for endpoint in WebhookEndpoint.objects.filter(
            account_id__in={e.account_id for e in events}, enabled=True
        ).only("pk", "account_id", "events"):
            endpoints[endpoint.account_id].append(endpoint)
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(
                endpoint=endpoint, event=event, created_at=event.created_at, next_attempt_at=now
            )
            for event in events
            for endpoint in endpoints[event.account_id]
            if endpoint.subscribes_to(event.type)
        )
        Event.objects.filter(pk__in=[e.pk for e in events]).update(dispatched=True)
    return len(events)


def _waiting(now) -> Q:
    """Pending deliveries due now and not held by a live claim."""
    return Q(status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now) & (
        Q(locked_until__isnull=True) | Q(locked_until__lte=now)
    )


# A disabled endpoint gets its test events only.
_SENDABLE = Q(endpoint__enabled=True) | Q(event__type=TEST_EVENT_TYPE)


def next_due_endpoint(
    *, after: int = 0, busy: set[int] | frozenset[int] = frozenset()
) -> int | None:
    """The first endpoint after `after` (wrapping round) with deliveries due, not in `busy`."""
    now = timezone.now()
    due = (
        WebhookDelivery.objects.filter(_waiting(now), _SENDABLE)
        .exclude(endpoint_id__in=busy)
        .order_by("endpoint_id")
        .values_list("endpoint_id", flat=True)
    )
    return due.filter(endpoint_id__gt=after).first() or due.first()


def lock_seconds() -> float:
    """A claim outlives the longest its batch can take, so it only lapses if its worker died."""
    return settings.WEBHOOK_BATCH_SIZE * settings.WEBHOOK_TIMEOUT * 2 + 60


def deliveries_claim(*, endpoint_id: int, limit: int | None = None) -> list[WebhookDelivery]:
    """Claim up to `limit` due deliveries to one endpoint, the longest due first (first
    attempts in the order their events were made)."""
    now = timezone.now()
    token = uuid.uuid4()
    limit = limit or settings.WEBHOOK_BATCH_SIZE
    enabled = WebhookEndpoint.objects.filter(pk=endpoint_id).values_list("enabled", flat=True)
    with transaction.atomic():
        due = WebhookDelivery.objects.filter(_waiting(now), endpoint_id=endpoint_id)
        if not enabled.first():
            due = due.filter(event__type=TEST_EVENT_TYPE)
        # In the order of the index (endpoint, next_attempt_at), so a backlog is not sorted
        # whole for every batch.
        pks = list(
            due.select_for_update(skip_locked=True, of=("self",))
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not pks:
            return []
        due.filter(pk__in=pks).update(
            claim_token=token, locked_until=now + timedelta(seconds=lock_seconds())
        )
    return list(
        WebhookDelivery.objects.filter(pk__in=pks, claim_token=token)
        .select_related("event", "endpoint")
        .order_by("created_at", "pk")
    )


@dataclass
class Attempt:
    delivery: WebhookDelivery
    status_code: int | None
    error: str = ""
    response: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def new_session() -> HTTPSession:
    """A session that never follows redirects and, unless WEBHOOK_ALLOW_PRIVATE, connects
    only to the public address it checked (requests-hardened)."""
    return HTTPSession(
        Config(
            ip_filter_enable=not settings.WEBHOOK_ALLOW_PRIVATE,
            ip_filter_allow_loopback_ips=False,
            never_redirect=True,
            default_timeout=(settings.WEBHOOK_TIMEOUT, settings.WEBHOOK_TIMEOUT),
            user_agent_override=USER_AGENT,
        )
    )


def delivery_post(session: HTTPSession, delivery: WebhookDelivery) -> Attempt:
    """Sign and post one delivery; what the endpoint answered."""
    event = delivery.event
    body = _encode(event_payload(event))
    now = timezone.now()
    headers = {
        "Content-Type": "application/json",
        **signature_headers(
            endpoint=delivery.endpoint, message_id=event.public_id, body=body, now=now
        ),
    }
    timeout = settings.WEBHOOK_TIMEOUT
    try:
        with session.post(
            delivery.endpoint.url,
            data=body.encode(),
            headers=headers,
            timeout=(timeout, timeout),
            stream=True,
        ) as response:
            text = response.raw.read(RESPONSE_KEPT, decode_content=True) or b""
            return Attempt(
                delivery,
                response.status_code,
                "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}",
                text.decode("utf-8", "replace"),
            )
    except RequestException as exc:
        return Attempt(delivery, None, _error_text(exc))


def _error_text(exc: Exception) -> str:
    name = type(exc).__name__
    if "Timeout" in name:
        return f"no answer within {settings.WEBHOOK_TIMEOUT:g} s"
    if name == "InvalidIPAddress":
        return f"refused: {exc} is not a public address"
    return f"{name}: {exc}"[:RESPONSE_KEPT]


def batch_send(deliveries: list[WebhookDelivery], session: HTTPSession) -> list[Attempt]:
    """Post a claimed batch to its endpoint, writing the outcomes as they come."""
    if not deliveries:
        return []
    endpoint = deliveries[0].endpoint
    try:
        webhook_url_check(endpoint.url)  # again: DNS may have changed since it was saved
        refusal = ""
    except WebhookUrlError as exc:
        refusal = f"url {exc}"
    attempts: list[Attempt] = []
    outcomes = Outcomes()
    for index, delivery in enumerate(deliveries):
        if refusal:
            attempt = Attempt(delivery, None, refusal)
        else:
            attempt = delivery_post(session, delivery)
        attempts.append(attempt)
        outcomes.add(attempt)
        if attempt.status_code is None and index + 1 < len(deliveries):
            outcomes.flush()
            deliveries_defer(deliveries[index + 1 :], until=delivery)
            break
    outcomes.flush()
    return attempts


def deliveries_defer(deliveries: list[WebhookDelivery], *, until: WebhookDelivery) -> None:
    """Release a batch's untried deliveries, due when the failed one is retried."""
    delivery = WebhookDelivery.objects.filter(pk=until.pk).only("next_attempt_at").first()
    at = delivery.next_attempt_at if delivery and delivery.next_attempt_at else timezone.now()
    WebhookDelivery.objects.filter(
        pk__in=[d.pk for d in deliveries], claim_token=deliveries[0].claim_token
    ).update(claim_token=None, locked_until=None, next_attempt_at=at)


class Outcomes:
    """Attempts written a few at a time (FLUSH_EVERY, or FLUSH_AFTER seconds), each flush in
    one transaction: successes with one UPDATE per status code, failures one by one."""

    FLUSH_EVERY = 25
    FLUSH_AFTER = 0.2

    def __init__(self) -> None:
        self.pending: list[Attempt] = []
        self.flushed = time.monotonic()

    def add(self, attempt: Attempt) -> None:
        self.pending.append(attempt)
        if (
            len(self.pending) >= self.FLUSH_EVERY
            or time.monotonic() - self.flushed > self.FLUSH_AFTER
        ):
            self.flush()

    def flush(self) -> None:
        self.flushed = time.monotonic()
        if not self.pending:
            return
        attempts, self.pending = self.pending, []
        with transaction.atomic():
            attempts_record(attempts)


def attempts_record(attempts: list[Attempt]) -> None:
    """Write attempts of one claimed batch (one endpoint): delivered, retried or failed; and
    the endpoint's failing streak, which may disable it."""
    now = timezone.now()
    endpoint = attempts[0].delivery.endpoint
    token = attempts[0].delivery.claim_token
    mine = WebhookDelivery.objects.filter(claim_token=token)
    released = {"claim_token": None, "locked_until": None, "last_attempt_at": now}
    successes = Counter(a.status_code for a in attempts if a.ok)
    for code in successes:
        pks = [a.delivery.pk for a in attempts if a.ok and a.status_code == code]
        mine.filter(pk__in=pks).update(
            status=WebhookDeliveryStatus.DELIVERED,
            delivered_at=now,
            attempt_count=F("attempt_count") + 1,
            last_status_code=code,
            last_error="",
            last_response="",
            next_attempt_at=None,
            **released,
        )
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    for attempt in (a for a in attempts if not a.ok):
        count = attempt.delivery.attempt_count + 1
        retry = count <= len(schedule)
        mine.filter(pk=attempt.delivery.pk).update(
            status=WebhookDeliveryStatus.PENDING if retry else WebhookDeliveryStatus.FAILED,
            attempt_count=count,
            next_attempt_at=now + timedelta(seconds=schedule[count - 1]) if retry else None,
            last_status_code=attempt.status_code,
            last_error=attempt.error[:RESPONSE_KEPT],
            last_response=attempt.response[:RESPONSE_KEPT],
            **released,
        )
    if successes:
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(
            failing_since=None
        )
    elif attempts:
        endpoint_failed(endpoint, now=now)


def endpoint_failed(endpoint: WebhookEndpoint, *, now) -> None:
    """Start or continue the endpoint's failing streak; disable it once the streak has lasted
    WEBHOOK_DISABLE_AFTER seconds, and tell its account in the portal."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    since = now - timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER)
    reason = (
        f"Disabled on {now:%Y-%m-%d %H:%M} UTC: every delivery failed for "
        f"{settings.WEBHOOK_DISABLE_AFTER / 86400:g} days."
    )
    disabled = WebhookEndpoint.objects.filter(
        pk=endpoint.pk, enabled=True, failing_since__lte=since
    ).update(enabled=False, disabled_reason=reason)
    if disabled:
        Account.objects.filter(pk=endpoint.account_id).update(
            portal_notice=f"Your webhook {endpoint.url[:200]} was disabled: it kept failing. "
            "Fix it, then enable it again on the Webhooks page."
        )
        log.warning("webhook %s disabled after failing since %s", endpoint.pk, since)


def events_purge(*, days: int | None = None, limit: int = 10_000, dry_run: bool = False) -> int:
    """Delete events older than WEBHOOK_RETENTION_DAYS whose deliveries are all finished
    (delivered or failed), with those deliveries; up to `limit` events. How many (with
    `dry_run`: how many there are, deleting nothing)."""
    days = settings.WEBHOOK_RETENTION_DAYS if days is None else days
    before = timezone.now() - timedelta(days=days)
    pending = WebhookDelivery.objects.filter(status=WebhookDeliveryStatus.PENDING)
    old = Event.objects.filter(created_at__lt=before, dispatched=True).exclude(
        pk__in=pending.values("event_id")
    )
    if dry_run:
        return old.count()
    old = old.order_by("pk").values_list("pk", flat=True)[:limit]
    pks = list(old)
    if not pks:
        return 0
    with transaction.atomic():
        WebhookDelivery.objects.filter(event_id__in=pks).delete()
        Event.objects.filter(pk__in=pks).delete()
    return len(pks)


# --- The loop -------------------------------------------------------------------------------


class WebhookSender:
    """The webhook loop's turns and its threads. Not shared between threads: the loop's own
    thread calls `turn` and `close`."""

    def __init__(self, *, connections: int | None = None) -> None:
        self.size = max(1, connections or settings.WEBHOOK_CONNECTIONS)
        self.free = threading.Semaphore(self.size)
        self.batches: queue.SimpleQueue[list[WebhookDelivery] | None] = queue.SimpleQueue()
        self.in_flight: Counter[int] = Counter()  # batches per endpoint
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.endpoint_id = 0  # the last endpoint served: the next is after it

    def turn(self, *, wait: float = 0.2) -> bool:
        """Dispatch new events, then hand one endpoint's due batch to a free thread. False
        when there was nothing to do."""
        dispatched = events_dispatch()
        if not self.free.acquire(timeout=wait):
            return True  # every thread busy
        with self.lock:
            busy = {
                e for e, n in self.in_flight.items() if n >= settings.WEBHOOK_ENDPOINT_CONCURRENCY
            }
        endpoint_id = next_due_endpoint(after=self.endpoint_id, busy=busy)
        batch = deliveries_claim(endpoint_id=endpoint_id) if endpoint_id else []
        if not batch:
            self.free.release()
            return bool(dispatched)
        self.endpoint_id = endpoint_id
        self.submit(batch)
        return True

    def submit(self, batch: list[WebhookDelivery]) -> None:
        with self.lock:
            self.in_flight[batch[0].endpoint_id] += 1
        if len(self.threads) < self.size:
            thread = threading.Thread(target=self._work, name="webhooks", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.batches.put(batch)

    def idle(self) -> bool:
        with self.lock:
            return not +self.in_flight

    def close(self, *, timeout: float = 60.0) -> None:
        """Let the threads finish their batches (`timeout` seconds at most), then end them.
        A batch still going after that keeps its claim until it lapses."""
        for _ in self.threads:
            self.batches.put(None)
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        session = new_session()
        try:
            while (batch := self.batches.get()) is not None:
                try:
                    batch_send(batch, session)
                except Exception:  # its claims lapse and the deliveries are tried again
                    log.exception("posting to webhook %s failed", batch[0].endpoint_id)
                    close_old_connections()
                finally:
                    with self.lock:
                        self.in_flight[batch[0].endpoint_id] -= 1
                    self.free.release()
        finally:
            session.close()
            connection.close()
