"""The suppression list: addresses an account's mail is never sent to.

A send to a suppressed address is accepted like any other and then refused by the worker when
it claims the message (`suppressions_for`, one query per batch): it ends `undeliverable`,
never attempted, and its account gets `email.suppressed`. A hard bounce adds the address with
the bounce's codes (`suppression_from_bounce`); a soft one never does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.db import transaction

from tracking.bounces import Bounce
from tracking.delivery.state import Transition, messages_transition
from tracking.models import (
    Account,
    BounceType,
    Disposition,
    EventType,
    Message,
    Suppression,
    SuppressionReason,
)

MAX_PER_REQUEST = 1000


def address_key(address: str) -> str:
    """One row per address whatever its case (mailbox names are case-blind in practice)."""
    return address.strip().lower()


def suppression_add(
    *,
    account: Account | int,
    email_address: str,
    reason: str = SuppressionReason.MANUAL,
    smtp_code: int | None = None,
    enhanced_code: str = "",
    smtp_text: str = "",
    message: Message | None = None,
) -> tuple[Suppression, bool]:
    """Suppress the address (kept as it is if suppressed already); (row, created)."""
    account_id = account if isinstance(account, int) else account.pk
    with transaction.atomic():
        return Suppression.objects.get_or_create(
            account_id=account_id,
            email_address=address_key(email_address),
            defaults={
                "reason": reason,
                "smtp_code": smtp_code,
                "enhanced_code": enhanced_code[:16],
                "smtp_text": smtp_text[:1000],
                "message": message,
            },
        )


@transaction.atomic
def suppressions_add(*, account: Account, entries: Sequence[tuple[str, str]]) -> list[Suppression]:
    """Suppress many (address, reason) pairs with one INSERT; those suppressed already are
    kept as they are. Returns the rows of every address given, in the order given."""
    if len(entries) > MAX_PER_REQUEST:
        raise ValueError(f"at most {MAX_PER_REQUEST} suppressions at once")
    wanted = {address_key(address): reason for address, reason in entries}
    Suppression.objects.bulk_create(
        [Suppression(account=account, email_address=a, reason=r) for a, r in wanted.items()],
        ignore_conflicts=True,
    )
    rows = {
        s.email_address: s
        for s in Suppression.objects.for_account(account).filter(email_address__in=list(wanted))
    }
    return [rows[a] for a in wanted if a in rows]


def suppression_delete(*, suppression: Suppression) -> None:
    """Remove the address from the list: the next send to it goes through."""
    suppression.delete()


def suppressions_for(messages: Iterable[Message]) -> dict[int, Suppression]:
    """The suppression of each message whose recipient its account suppresses, by message pk:
    one query for a whole batch."""
    messages = list(messages)
    if not messages:
        return {}
    keys = {(m.account_id, address_key(m.recipient_address)): m.pk for m in messages}
    found = Suppression.objects.filter(
        account_id__in={account for account, _ in keys},
        email_address__in={address for _, address in keys},
    )
    by_key = {(s.account_id, s.email_address): s for s in found}
    return {pk: by_key[key] for key, pk in keys.items() if key in by_key}


def suppression_detail(suppression: Suppression) -> str:
    """`status_detail` of a message refused because of it."""
    why = suppression.get_reason_display().lower()
    code = " ".join(str(p) for p in (suppression.smtp_code, suppression.enhanced_code) if p)
    return f"suppressed: {suppression.email_address} is on the suppression list ({why}" + (
        f", {code})" if code else ")"
    )


def suppressed_refuse(messages: list[Message]) -> list[Message]:
    """End the claimed messages whose recipient is suppressed (`undeliverable`, never
    attempted, their event `email.suppressed`); return the others, to be attempted."""
    found = suppressions_for(messages)
    if not found:
        return messages
    messages_transition(
        [
            Transition(
                message,
                Disposition.UNDELIVERABLE,
                {"status_detail": suppression_detail(found[message.pk])},
                claimed=True,
                event={"suppression_reason": found[message.pk].reason},
                event_type=EventType.SUPPRESSED,
            )
            for message in messages
            if message.pk in found
        ]
    )
    return [message for message in messages if message.pk not in found]


def suppressions_from_replies(failures: Iterable[tuple[Message, object, Bounce]]) -> int:
    """Suppress the recipients of permanent (5xx) hard bounces; how many were added."""
    added = 0
    for message, reply, bounce in failures:
        if bounce.bounce_type != BounceType.HARD or not reply.permanent:
            continue
        _, created = suppression_add(
            account=message.account_id,
            email_address=message.recipient_address,
            reason=SuppressionReason.HARD_BOUNCE,
            smtp_code=reply.code,
            enhanced_code=bounce.enhanced_code,
            smtp_text=reply.text,
            message=message,
        )
        added += created
    return added
