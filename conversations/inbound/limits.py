"""The inbound SMTP server's limits: how much a stranger can make it hold and store.

| limit                                  | setting (SMTPD_...), default  | past it            |
|----------------------------------------|-------------------------------|--------------------|
| connections at once from one client    | MAX_CONNECTIONS_PER_CLIENT 10 | `421 4.7.0`, closed |
| connections at once in all             | MAX_CONNECTIONS 100           | `421 4.3.2`, closed |
| messages from one client a minute      | MESSAGES_PER_CLIENT_PER_MINUTE 60 | `451 4.7.1`    |
| bytes to one alias or proxy address a day (UTC) | DAILY_BYTES_PER_RECIPIENT 100 MB | `452 4.2.2` |
| a message larger than that whole quota |                               | `552 5.2.3`        |

A client is its IPv4 address, or its IPv6 /64 (what one subscriber is given). Bounce (VERP)
addresses have no daily quota: each is for one message, and the client's limit covers them.

Connections are counted by each smtpd process, since a connection belongs to one. Messages
and bytes are counted in the database (InboundUsage rows), in the transaction that stores the
messages (`usage_claim`): it adds them to their rows, which locks those rows until it commits,
learns the totals before them, and stores only the messages that fit; so the counts are exact
with any number of smtpd processes, and a message counts if and only if it was stored (a
failed store rolls its counts back). The database rather than Redis (Django's cache) because
the count must share the store's transaction to be exact, and the database is there in every
deployment. Each process also remembers the totals its last store saw (RecentUsage), to refuse
a client at MAIL FROM and a recipient at RCPT TO, before the message is sent, without a query
of its own.

The codes: 421 closes the connection (RFC 5321 section 3.8); X.7.0/X.7.1 are policy (RFC
3463), X.3.2 is "system not accepting network messages" (our capacity, not the client's
doing). A full daily quota is 452 4.2.2 ("mailbox full", which RFC 3463 describes as a
per-mailbox administrative quota, a transient condition): the sender keeps the message and
tries again, and the quota frees up the next day. Only a message that could never fit, being
larger than the whole quota, is refused for good: 552 5.2.3 ("message length exceeds
administrative limit").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from conversations.models import InboundUsage
from iovox_email.metrics import SMTP_CONNECTIONS_OPEN
from tracking.delivery.verp import verp_message_id

log = logging.getLogger("conversations.smtpd")

TOO_MANY_CONNECTIONS = "421 4.3.2 Too many connections, try again later"
TOO_MANY_FROM_CLIENT = "421 4.7.0 Too many connections from your address, try again later"
TOO_MANY_MESSAGES = "451 4.7.1 Too many messages from your address, try again later"
QUOTA_REACHED = "452 4.2.2 Recipient's daily quota reached, try again later"
OVER_WHOLE_QUOTA = "552 5.2.3 Message larger than the recipient's daily quota"
# RecentUsage forgets everything past this many keys (they are asked again at the next store).
RECENT_USAGE_KEYS = 100_000


def now() -> float:
    """The clock the windows are read from (Unix time)."""
    return time.time()


def client_of(ip: str) -> str:
    """The client an IP address counts as: the IPv4 address, or the IPv6 /64 it is in."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# --- Connections: counted by this process ---------------------------------------------------


class OpenConnections:
    """The connections this process holds, in all and per client."""

    def __init__(self) -> None:
        self.total = 0
        self.per_client: Counter[str] = Counter()

    def open(self, client: str) -> str | None:
        """Count a new connection from `client`; or, past a limit, the reply refusing it."""
        if 0 < settings.SMTPD_MAX_CONNECTIONS <= self.total:
            return TOO_MANY_CONNECTIONS
        if 0 < settings.SMTPD_MAX_CONNECTIONS_PER_CLIENT <= self.per_client[client]:
            return TOO_MANY_FROM_CLIENT
        self.total += 1
        self.per_client[client] += 1
        SMTP_CONNECTIONS_OPEN.inc()
        return None

    def close(self, client: str) -> None:
        self.total -= 1
        self.per_client[client] -= 1
        SMTP_CONNECTIONS_OPEN.dec()
        if not self.per_client[client]:
            del self.per_client[client]


class ConnectionGate(asyncio.Protocol):
    """The protocol of each accepted connection, in front of its SMTP session: past a
    connection limit it answers 421 and closes before any session starts; otherwise it hands
    the connection, and every event of it, to a new session (aiosmtpd's SMTP protocol).

    aiosmtpd has no hook for a new connection (its greeting is sent before any handler hook),
    so the gate stands where asyncio puts a connection's protocol, and speaks to the session
    only through asyncio's public protocol methods."""

    def __init__(self, connections: OpenConnections, new_session: Callable[[], asyncio.Protocol]):
        self.connections = connections
        self.new_session = new_session
        self.session: asyncio.Protocol | None = None
        self.client = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = client_of(str(peer[0]) if isinstance(peer, tuple) and peer else "")
        refusal = self.connections.open(self.client)
        if refusal is not None:
            log.info("refused a connection from %s: %s", self.client, refusal)
            transport.write(refusal.encode("ascii") + b"\r\n")
            transport.close()
            return
        self.session = self.new_session()
        self.session.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.session is not None:
            self.connections.close(self.client)
            self.session.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.data_received(data)

    def eof_received(self) -> bool | None:
        return self.session.eof_received() if self.session is not None else None

    def pause_writing(self) -> None:
        if self.session is not None:
            self.session.pause_writing()

    def resume_writing(self) -> None:
        if self.session is not None:
            self.session.resume_writing()


# --- Messages and bytes: counted in the database, when a message is stored ------------------


@dataclass(frozen=True)
class Window:
    """One kind of usage counted over a window of time."""

    prefix: str
    seconds: int
    setting: str

    @property
    def maximum(self) -> int:
        return getattr(settings, self.setting)  # 0: no limit

    def key(self, who: str) -> str:
        return f"{self.prefix}:{who}"

    def start(self, at: float) -> int:
        """The Unix time the window that holds `at` began."""
        return int(at) // self.seconds * self.seconds


CLIENT_MESSAGES = Window("client", 60, "SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE")
RECIPIENT_BYTES = Window("recipient", 86400, "SMTPD_DAILY_BYTES_PER_RECIPIENT")


def has_quota(recipient: str) -> bool:
    """Aliases and proxy addresses have a daily quota; bounce addresses, each for one
    message we sent, do not."""
    return verp_message_id(recipient) is None


def _recipient_refusal(used: int, size: int) -> str | None:
    maximum = RECIPIENT_BYTES.maximum
    if maximum and size > maximum:
        return OVER_WHOLE_QUOTA
    if maximum and used + size > maximum:
        return QUOTA_REACHED
    return None


@dataclass(frozen=True)
class Usage:
    """What one message would use of the limits."""

    client: str
    recipients: list[str]
    size: int

    def amounts(self) -> dict[str, int]:
        """What it adds to each limit's key (those of the limits that are on)."""
        amounts = {}
        if CLIENT_MESSAGES.maximum:
            amounts[CLIENT_MESSAGES.key(self.client)] = 1
        if RECIPIENT_BYTES.maximum:
            for recipient in self.recipients:
                if has_quota(recipient):
                    amounts[RECIPIENT_BYTES.key(recipient)] = self.size
        return amounts


def usage_claim(messages: list[Usage]) -> tuple[list[str | None], dict[str, tuple[int, int]]]:
    """Count the messages that fit their limits, inside the caller's transaction (the one
    that stores them); for each message None when it fits, else the reply refusing it, and
    the totals of every key after (window start, amount), for RecentUsage.

    All of them are added at once, by one statement that locks each row (made if missing)
    until the transaction ends, and returns the new totals: so the totals before are known
    exactly, whatever other smtpd processes store meanwhile. Messages are then admitted in
    order against those; what was added for the refused ones is taken back."""
    at = now()
    wanted: dict[str, int] = {}
    for message in messages:
        for key, amount in message.amounts().items():
            wanted[key] = wanted.get(key, 0) + amount
    if not wanted:
        return [None] * len(messages), {}
    totals = _usage_add(wanted, at)
    used = {key: totals[key] - amount for key, amount in wanted.items()}  # before these
    replies: list[str | None] = []
    refused: dict[str, int] = {}
    for message in messages:
        amounts = message.amounts()
        reply = _refusal(message, used)
        replies.append(reply)
        for key, amount in amounts.items():
            if reply is None:
                used[key] += amount
            else:
                refused[key] = refused.get(key, 0) + amount
    if refused:
        _usage_add({key: -amount for key, amount in refused.items()}, at)
    return replies, {key: (_window_of(key).start(at), amount) for key, amount in used.items()}


def _refusal(message: Usage, used: dict[str, int]) -> str | None:
    for key in message.amounts():
        if _window_of(key) is CLIENT_MESSAGES:
            if used[key] + 1 > CLIENT_MESSAGES.maximum:
                return TOO_MANY_MESSAGES
        elif refusal := _recipient_refusal(used[key], message.size):
            return refusal
    return None


def _window_of(key: str) -> Window:
    return CLIENT_MESSAGES if key.startswith(f"{CLIENT_MESSAGES.prefix}:") else RECIPIENT_BYTES


def _usage_add(amounts: dict[str, int], at: float) -> dict[str, int]:
    """Add to each key's amount in its current window (a row from an older window starts
    again from nothing); each key's new amount, read back while the rows are locked. The
    INSERT that adds to the row it finds is plain SQL (PostgreSQL and SQLite alike): Django's
    bulk_create can only overwrite a row. (RETURNING would spare the SELECT, but needs
    SQLite 3.35, newer than Django asks for.)"""
    table = connection.ops.quote_name(InboundUsage._meta.db_table)
    keys = sorted(amounts)  # rows locked in one order by every store: no deadlock between them
    rows = [(key, _window_of(key).start(at), amounts[key]) for key in keys]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (key, window_start, amount)"
            f" VALUES {', '.join(['(%s, %s, %s)'] * len(rows))}"
            f" ON CONFLICT (key) DO UPDATE SET amount = CASE"
            f" WHEN {table}.window_start = excluded.window_start"
            f" THEN {table}.amount + excluded.amount ELSE excluded.amount END,"
            " window_start = excluded.window_start",
            [value for row in rows for value in row],
        )
        cursor.execute(
            f"SELECT key, amount FROM {table} WHERE key IN ({', '.join(['%s'] * len(keys))})",
            keys,
        )
        return dict(cursor.fetchall())


class RecentUsage:
    """The totals this process's last store of each client and recipient saw: enough to
    refuse one over its limit at MAIL FROM or RCPT TO without a query. Another process's
    messages since are not in them, so this only ever refuses early what the store would
    refuse; one not seen yet is let through to the store, which decides."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, int]] = {}

    def update(self, totals: dict[str, tuple[int, int]]) -> None:
        if len(self.seen) + len(totals) > RECENT_USAGE_KEYS:
            self.seen.clear()
        self.seen.update(totals)

    def _used(self, window: Window, who: str) -> int:
        start, amount = self.seen.get(window.key(who), (0, 0))
        return amount if start == window.start(now()) else 0

    def mail_refusal(self, client: str) -> str | None:
        """The reply to MAIL FROM from a client that has sent its messages for this minute."""
        maximum = CLIENT_MESSAGES.maximum
        if maximum and self._used(CLIENT_MESSAGES, client) >= maximum:
            return TOO_MANY_MESSAGES
        return None

    def rcpt_refusal(self, recipient: str, size: int) -> str | None:
        """The reply to RCPT TO for a recipient whose quota for today has no room for `size`
        bytes (what MAIL FROM declared, else 1)."""
        if not RECIPIENT_BYTES.maximum or not has_quota(recipient):
            return None
        return _recipient_refusal(self._used(RECIPIENT_BYTES, recipient), max(size, 1))


def usage_purge() -> int:
    """Delete the usage rows that no window open now can need (older than a day)."""
    cutoff = RECIPIENT_BYTES.start(now()) - RECIPIENT_BYTES.seconds
    deleted, _ = InboundUsage.objects.filter(window_start__lt=cutoff).delete()
    return deleted
