"""The disposition state machine of DESIGN.md, owned by `message_transition` alone.

Every change of `disposition` goes through it (and `messages_transition`, its batch form, which
it calls). The UPDATE is conditional on the disposition and `state_version` the caller read,
so of two writers that read the same state only the first moves the message. A delivery
outcome is conditional on its claim too (`Transition.claimed`): a worker whose claim lapsed,
and was taken over by another, cannot overwrite the newer outcome. A claim itself changes
neither, so a bounce or an expiry never has to read a message again because a worker
claimed it meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Expression, F, Field
from django.utils import timezone

from iovox_email.metrics import ACCEPTED_TO_SENT, DELIVERIES
from tracking.events import transitions_emit
from tracking.models import Disposition, Message

log = logging.getLogger("tracking.delivery")

ALLOWED: dict[str, frozenset[str]] = {
    Disposition.RECEIVED: frozenset(
        {
            Disposition.SENT,
            Disposition.QUEUED,
            Disposition.UNDELIVERABLE,
            Disposition.NO_MX_RECORD,
            Disposition.NO_RULES,
            Disposition.RULE_ERROR,
        }
    ),
    Disposition.QUEUED: frozenset(
        {
            Disposition.SENT,
            Disposition.QUEUED,
            Disposition.UNDELIVERABLE,
            Disposition.NO_MX_RECORD,
            Disposition.EXPIRED,
        }
    ),
    Disposition.SENT: frozenset({Disposition.RECEIVED_BOUNCED}),
}

# The fields a transition may set beside the disposition.
TRANSITION_FIELDS = frozenset(
    {"delivery_date", "next_attempt_at", "last_smtp_response", "status_detail", "esp_message_id"}
)


class InvalidTransition(ValueError):
    pass


def transition_allowed(current: str, to: str) -> bool:
    return to in ALLOWED.get(current, frozenset())


@dataclass(frozen=True)
class Transition:
    message: Message
    to: str
    fields: dict[str, Any] = field(default_factory=dict)
    # The outcome of a delivery attempt: made only while the claim that attempted it (the
    # message's `claim_token`, as claimed) still holds the message.
    claimed: bool = False
    # What the change's webhook event adds to the message (smtp_code, bounce_type, ...), and
    # its type when it is not `email.<to>` (a send refused by the suppression list).
    event: dict[str, Any] = field(default_factory=dict)
    event_type: str = ""

    def matches(self, disposition: str, state_version: int, claim_token) -> bool:
        """The row is still in the state this transition was decided on."""
        message = self.message
        return (disposition, state_version) == (message.disposition, message.state_version) and (
            not self.claimed or claim_token == message.claim_token
        )


def message_transition(
    *,
    message: Message,
    to: str,
    event: dict[str, Any] | None = None,
    event_type: str = "",
    **fields: Any,
) -> bool:
    """Move `message` to disposition `to`, setting `fields` with it, and release any claim.

    Raises InvalidTransition for a move DESIGN.md does not allow. Returns False, changing
    nothing, when the row is no longer in the state the caller read (another worker moved it
    first); on success the in-memory message is updated too.
    """
    transition = Transition(message, to, fields, event=event or {}, event_type=event_type)
    return messages_transition([transition])[0]


def messages_transition(transitions: Sequence[Transition]) -> list[bool]:
    """`message_transition` for several messages at once (a worker's batch of outcomes): one
    conditional UPDATE per call instead of one per message. Returns, per transition, whether
    it was made. The only code that writes `disposition`, and so the one that writes the
    webhook event of every change, in the same transaction (tracking/events.py)."""
    for transition in transitions:
        _check(transition)
    if not transitions:
        return []
    if len(transitions) == 1:
        return [_transition_one(transitions[0])]
    with transaction.atomic():
        current = {
            pk: row
            # Locked in primary key order, as every batch transition locks them: a worker's
            # outcomes and the loop's expiries never wait for each other in a circle.
            for pk, *row in Message.objects.select_for_update()
            .filter(pk__in=[t.message.pk for t in transitions])
            .order_by("pk")
            .values_list("pk", "disposition", "state_version", "claim_token")
        }
        movable = [
            t for t in transitions if t.message.pk in current and t.matches(*current[t.message.pk])
        ]
        if movable:
            Message.objects.filter(pk__in=[t.message.pk for t in movable]).update(
                state_version=F("state_version") + 1, **_column_values(movable)
            )
            _emit(movable)
    moved = {id(t) for t in movable}
    for transition in movable:
        _apply(transition)
    return [id(t) in moved for t in transitions]


def _check(transition: Transition) -> None:
    if not transition_allowed(transition.message.disposition, transition.to):
        raise InvalidTransition(
            f"{transition.message.disposition} -> {transition.to} is not allowed"
        )
    unknown = set(transition.fields) - TRANSITION_FIELDS
    if unknown:
        raise TypeError(f"a transition cannot set {', '.join(sorted(unknown))}")


def _changes(transition: Transition) -> dict[str, Any]:
    return {
        "disposition": transition.to,
        "locked_until": None,
        "claim_token": None,
        "next_attempt_at": None,  # only a move to `queued` sets the next one
        **transition.fields,
    }


def _transition_one(transition: Transition) -> bool:
    message = transition.message
    # Its event must commit with it: a transaction of its own unless in the caller's.
    with contextlib.nullcontext() if connection.in_atomic_block else transaction.atomic():
        row = Message.objects.filter(
            pk=message.pk, disposition=message.disposition, state_version=message.state_version
        )
        if transition.claimed:
            row = row.filter(claim_token=message.claim_token)
        updated = row.update(state_version=F("state_version") + 1, **_changes(transition))
        if updated != 1:
            return False
        _emit([transition])
    _apply(transition)
    return True


def _emit(transitions: list[Transition]) -> None:
    transitions_emit([(t.message, t.event_type or f"email.{t.to}", t.event) for t in transitions])


def _column_values(transitions: list[Transition]) -> dict[str, Any]:
    """Per column: one value when every row gets the same, else CASE on the primary key."""
    per_row = [(t.message.pk, _changes(t)) for t in transitions]
    names = {name for _, changes in per_row for name in changes}
    values: dict[str, Any] = {}
    for name in names:
        column = Message._meta.get_field(name)
        row_values = [(pk, changes[name]) for pk, changes in per_row if name in changes]
        distinct = {repr(value) for _, value in row_values}
        if len(row_values) == len(per_row) and len(distinct) == 1:
            values[name] = row_values[0][1]
            continue
        values[name] = ValueByPk(column, row_values)
    return values


class ValueByPk(Expression):
    """`CASE pk WHEN ... THEN ... ELSE column END`: a value per row for one column of an
    UPDATE. What Case(When(pk=..., then=Value(...))) says, but a batch's outcomes (each with
    its own SMTP reply and delivery date) made Django resolve an expression tree per row,
    which cost more than the UPDATE itself."""

    def __init__(self, column: Field, row_values: list[tuple[int, Any]]) -> None:
        super().__init__(output_field=column)
        self.column = column
        self.row_values = row_values

    def as_sql(self, compiler, connection):
        quote = connection.ops.quote_name
        whens: list[str] = []
        params: list[Any] = []
        for pk, value in self.row_values:
            whens.append("WHEN %s THEN %s")
            params += [pk, self.column.get_db_prep_save(value, connection)]
        pk_column, column = quote(Message._meta.pk.column), quote(self.column.column)
        return f"CASE {pk_column} {' '.join(whens)} ELSE {column} END", params


def _apply(transition: Transition) -> None:
    message = transition.message
    _observe(transition)
    for name, value in _changes(transition).items():
        setattr(message, name, value)
    message.state_version += 1


# Every move but a later bounce is the outcome of an attempt to deliver (or of the end of
# trying: expiry, no rules).
NOT_DELIVERY_OUTCOMES = frozenset({Disposition.RECEIVED_BOUNCED})


def _transport(message: Message) -> str:
    """The metric's and log line's transport (mx, smtp, anymail): the one that delivered the
    message (transports.messages_by_transport), else the deployment's, e.g. at expiry."""
    return getattr(message, "delivery_transport", None) or settings.DELIVERY_TRANSPORT


def _observe(transition: Transition) -> None:
    """One metric and one INFO line per delivery outcome."""
    if transition.to in NOT_DELIVERY_OUTCOMES:
        return
    message = transition.message
    transport = _transport(message)
    DELIVERIES.labels(outcome=transition.to, transport=transport).inc()
    if transition.to == Disposition.SENT and message.receive_date is not None:
        waited = (timezone.now() - message.receive_date).total_seconds()
        ACCEPTED_TO_SENT.labels(transport=transport).observe(max(0.0, waited))
    log.info(
        "message %s %s",
        message.message_id,
        transition.to,
        extra={
            "message_id": str(message.message_id),
            "account": message.account_id,
            "outcome": transition.to,
            "transport": transport,
            "smtp_response": transition.fields.get("last_smtp_response", ""),
        },
    )
