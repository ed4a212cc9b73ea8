"""The disposition state machine of DESIGN.md, owned by `message_transition` alone.

Every change of `disposition` goes through it. The UPDATE is conditional on the disposition and
`state_version` the caller read, so a worker whose claim lapsed (and was taken over by another)
cannot overwrite the newer outcome.
"""

from __future__ import annotations

from typing import Any

from django.db.models import F

from tracking.models import Disposition, Message

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
    {"delivery_date", "next_attempt_at", "last_smtp_response", "status_detail"}
)


class InvalidTransition(ValueError):
    pass


def transition_allowed(current: str, to: str) -> bool:
    return to in ALLOWED.get(current, frozenset())


def message_transition(*, message: Message, to: str, **fields: Any) -> bool:
    """Move `message` to disposition `to`, setting `fields` with it, and release any claim.

    Raises InvalidTransition for a move DESIGN.md does not allow. Returns False, changing
    nothing, when the row is no longer in the state the caller read (another worker moved it
    first); on success the in-memory message is updated too.
    """
    if not transition_allowed(message.disposition, to):
        raise InvalidTransition(f"{message.disposition} -> {to} is not allowed")
    unknown = set(fields) - TRANSITION_FIELDS
    if unknown:
        raise TypeError(f"a transition cannot set {', '.join(sorted(unknown))}")
    changes = {"disposition": to, "locked_until": None, "claim_token": None, **fields}
    updated = Message.objects.filter(
        pk=message.pk, disposition=message.disposition, state_version=message.state_version
    ).update(state_version=F("state_version") + 1, **changes)
    if updated != 1:
        return False
    for name, value in changes.items():
        setattr(message, name, value)
    message.state_version += 1
    return True
