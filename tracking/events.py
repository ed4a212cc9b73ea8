"""Writing events into the outbox, in the transaction of the change they report.

A change worth telling a customer (a disposition change, an open or a click, a new message)
calls `events_emit` inside the transaction that makes the change, so the Event row commits or
rolls back with it: an event is never lost, and never sent for a change that did not happen.
The worker then delivers it (tracking/webhooks/sender.py).

A batch of changes writes its events with one SELECT (the messages as the API shows them) and
one INSERT, and writes nothing at all for an account that has no enabled endpoint wanting that
event type. That answer is kept per process for WEBHOOK_SUBSCRIPTION_CACHE_SECONDS: an endpoint
added or re-enabled may miss the events other processes make in its first seconds; one
disabled or deleted only costs a few rows that the worker drops.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from tracking.caching import ProcessCache
from tracking.dates import date_text
from tracking.models import Event, EventType, Message, WebhookEndpoint
from tracking.search import message_rows

ALL_TYPES = frozenset(EventType.values)


@dataclass(frozen=True)
class EventDraft:
    """An event to write: its account, type, message (by primary key) and what the payload
    adds to the message's fields (`smtp_code`, `bounce_type`, an open's `event`, ...)."""

    account_id: int
    type: str
    message_pk: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# account pk -> the event types its enabled endpoints want.
subscriptions: ProcessCache[frozenset[str]] = ProcessCache(
    ttl=lambda: settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS
)


def account_event_types(account_id: int) -> frozenset[str]:
    """The event types some enabled endpoint of the account wants (cached, see above)."""
    return accounts_event_types([account_id])[account_id]


def accounts_event_types(account_ids: Iterable[int]) -> dict[int, frozenset[str]]:
    """`account_event_types` for several accounts, with one query for those not cached."""
    found = {a: subscriptions.get(a) for a in set(account_ids)}
    missing = [a for a, types in found.items() if types is None]
    if missing:
        wanted: dict[int, set[str]] = {a: set() for a in missing}
        rows = WebhookEndpoint.objects.filter(account_id__in=missing, enabled=True).values_list(
            "account_id", "events"
        )
        for account_id, events in rows:
            wanted[account_id] |= set(events) if events else ALL_TYPES
        for account_id, types in wanted.items():
            found[account_id] = frozenset(types)
            subscriptions.put(account_id, found[account_id])
    return found


def event_wanted(account_id: int, event_type: str) -> bool:
    return event_type in account_event_types(account_id)


def subscriptions_changed(account_id: int) -> None:
    """This process forgets what it knew of the account's endpoints (others in their TTL)."""
    subscriptions.put(account_id, None)  # type: ignore[arg-type]


def events_emit(drafts: Iterable[EventDraft]) -> int:
    """Write the events some enabled endpoint wants, with one INSERT, their `data` the message
    as `GET /rest/v1/email/{message_id}` shows it (read here, so inside the caller's
    transaction it is the message as changed). Call it inside the transaction of the change.
    Returns how many events were written."""
    drafts = list(drafts)
    types = accounts_event_types(d.account_id for d in drafts)
    wanted = [d for d in drafts if d.type in types[d.account_id]]
    if not wanted:
        return 0
    rows = message_rows([d.message_pk for d in wanted if d.message_pk is not None])
    events = []
    for draft in wanted:
        data = dict(rows.get(draft.message_pk, {})) if draft.message_pk is not None else {}
        if draft.message_pk is not None and not data:
            continue  # the message is gone (deleted in the same transaction)
        data.update({k: v for k, v in draft.extra.items() if v not in (None, "")})
        events.append(Event(account_id=draft.account_id, type=draft.type, data=data))
    Event.objects.bulk_create(events)
    return len(events)


def transitions_emit(changes: Sequence[tuple[Any, str, dict[str, Any]]]) -> int:
    """Events for messages whose disposition changed: (message, event type, extra) each. The
    message's account is read from the instance, or with one query for those loaded without
    it."""
    missing = [m.pk for m, _, _ in changes if "account_id" in m.get_deferred_fields()]
    accounts = {}
    if missing:
        accounts = dict(Message.objects.filter(pk__in=missing).values_list("pk", "account_id"))
    return events_emit(
        EventDraft(
            account_id=accounts.get(message.pk) or message.account_id,
            type=event_type,
            message_pk=message.pk,
            extra=extra,
        )
        for message, event_type, extra in changes
        if message.pk in accounts or "account_id" not in message.get_deferred_fields()
    )


def event_payload(event: Event) -> dict[str, Any]:
    """What an endpoint receives: `{"id", "type", "created_date", "data"}`."""
    return {
        "id": event.public_id,
        "type": event.type,
        "created_date": date_text(event.created_at),
        "data": event.data,
    }
