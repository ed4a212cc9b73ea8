"""The inbound SMTP server (aiosmtpd).

One event loop serves every connection, so nothing here blocks it: each database step (is this
recipient ours? store these messages) runs in a small thread pool, on PostgreSQL and SQLite
alike. A connection past the limits gets a 421 before its session starts (limits.py). A
recipient is judged at RCPT TO on its own (550 5.1.1 when it is not an alias, a proxy address
or a bounce address of ours); at end of DATA the sender is authenticated (admission.py, in a
thread pool of its own: 550 5.7.1 for a DMARC reject, 451 4.7.0 when DNS fails); the message is
stored before the 250 answer if it fits the
limits, and a failure to store it is a 451 so the sender retries: an accepted message is never
lost. Routing happens afterwards, in the worker.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import TypeVar

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from conversations.inbound.admission import inbound_admit
from conversations.inbound.limits import ConnectionGate, OpenConnections, RecentUsage, client_of
from conversations.inbound.raw_mail import Envelope
from conversations.inbound.receive import Arrival, inbound_receive_many
from conversations.inbound.recipients import address_normalize, recipient_resolve
from conversations.models import InboundMessage
from iovox_email.metrics import INBOUND_MESSAGES
from tracking.caching import ProcessCache

log = logging.getLogger("conversations.smtpd")

# Threads that talk to the database for the event loop; each keeps its own connection.
DB_THREADS = 8
# Threads that authenticate senders (DNS lookups, signature checks) for the event loop: a pool
# apart, so slow DNS never holds up the database work of other sessions.
AUTH_THREADS = 8
# RFC 5321 section 4.5.3.1.8: at least 100 recipients must be accepted; more get a 452, and
# the client sends the rest in another transaction.
MAX_RECIPIENTS = 100
# Messages stored in one transaction at most (see GroupCommit).
GROUP_COMMIT_LIMIT = 100
# Bytes of mail stored in one transaction at most (a larger message is stored on its own): the
# database driver holds a few copies of what one statement writes, so this bounds the memory a
# store takes, whatever the sizes of the messages that wait for it.
GROUP_COMMIT_BYTES = 1024 * 1024
# How long an address found to be ours is believed without asking the database again (see
# KnownRecipients).
RECIPIENT_CACHE_SECONDS = 10.0
# A thread's persistent database connection is health-checked at most this often (see _db_call).
HEALTH_CHECK_SECONDS = 1.0

T = TypeVar("T")


# An in-memory SQLite database is shared between threads with table locks and no busy
# timeout: its users must take turns.
_in_memory_sqlite_lock = threading.Lock()


def _one_at_a_time_if_in_memory_sqlite():
    in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()
    return _in_memory_sqlite_lock if in_memory else nullcontext()


class _LastHealthCheck(threading.local):
    at = float("-inf")  # when this thread's connection was last checked (time.monotonic)


_last_health_check = _LastHealthCheck()


def _db_call(func: Callable[..., T], *args) -> T:
    """Run `func(*args)` as one database job of this thread, as Django runs a request: a
    connection that is broken or past CONN_MAX_AGE is dropped first, and the next query
    checks the one it gets (CONN_HEALTH_CHECKS).

    Without CONN_MAX_AGE every job has a connection of its own, closed after it. With it, the
    check (a `SELECT 1` round trip, as dear as the work on a busy server) is made at most
    every HEALTH_CHECK_SECONDS, and after a failure. A connection that broke since its last
    check (a database restart) fails its job at the first statement, before anything was
    written; the job is then run once more on a checked connection, so the sender gets its
    answer rather than a 451. (Should it break during the commit instead, the message may
    be stored twice, as it would be when the sender sends it again after a 451.)"""
    with _one_at_a_time_if_in_memory_sqlite():
        for attempt in (1, 2):
            checked = _job_start(check=attempt > 1)
            try:
                result = func(*args)
            except Exception as exc:
                _job_end(failed=True)
                if checked or not isinstance(exc, OperationalError | InterfaceError):
                    raise
                log.warning("a database connection had broken (%s); trying on a new one", exc)
                continue
            _job_end(failed=False)
            return result
    raise AssertionError("unreachable: the second attempt returns or raises")


def _job_start(*, check: bool) -> bool:
    """Ready this thread's connection for a job; whether it is checked before its use."""
    now = time.monotonic()
    if not check and _persistent() and now - _last_health_check.at < HEALTH_CHECK_SECONDS:
        return False
    close_old_connections()
    _last_health_check.at = now
    return True


def _job_end(*, failed: bool) -> None:
    if failed:
        _last_health_check.at = float("-inf")  # checked before its next use
    if failed or not _persistent():
        close_old_connections()


def _persistent() -> bool:
    return bool(connection.settings_dict.get("CONN_MAX_AGE"))


def _resolve(address: str) -> str | None:
    """The address as we know it (normalized), or None when it is not ours."""
    recipient = recipient_resolve(address)
    return recipient.address if recipient else None


class KnownRecipients:
    """Recent positive answers to "is this address ours?", so a stream of mail to one alias
    costs no database round trip per RCPT TO.

    Only "ours" is remembered, never "unknown": an alias made a moment ago is accepted at
    once. An alias removed within the last RECIPIENT_CACHE_SECONDS may still be accepted;
    the worker resolves every recipient again when it routes, and refuses it then (recorded
    on the InboundMessage), as it does for an alias removed between RCPT and routing.
    """

    def __init__(self, ttl: float = RECIPIENT_CACHE_SECONDS):
        self._known: ProcessCache[str] = ProcessCache(ttl=lambda: ttl)

    def get(self, address: str) -> str | None:
        return self._known.get(address_normalize(address))

    def add(self, address: str) -> None:
        self._known.put(address, address)


class GroupCommit:
    """Stores the messages of concurrent sessions together: one transaction and one
    durable commit for all that arrived while the previous group was being
    written (classic group commit). Each session still gets its answer only once its own
    row has committed (or the reply refusing it); when a group fails, every message in it
    gets the failure (a 451). A group holds GROUP_COMMIT_BYTES at most, so a large message
    is written on its own."""

    def __init__(self, store, limit: int = GROUP_COMMIT_LIMIT):
        self.store_group = store
        self.limit = limit
        self.waiting: list[tuple[Arrival, asyncio.Future]] = []
        self.writer: asyncio.Task | None = None

    async def store(self, arrival: Arrival) -> InboundMessage | str:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((arrival, future))
        if self.writer is None:
            self.writer = asyncio.ensure_future(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self.waiting:
                group = self._next_group()
                try:
                    stored = await self.store_group([arrival for arrival, _ in group])
                except BaseException as exc:
                    for _, future in group:
                        if not future.done():  # a session that went away no longer waits
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise  # cancelled: at shutdown
                    continue
                for (_, future), inbound in zip(group, stored, strict=True):
                    if not future.done():
                        future.set_result(inbound)
        finally:
            self.writer = None

    def _next_group(self) -> list[tuple[Arrival, asyncio.Future]]:
        """The first waiting messages, up to `limit` of them and GROUP_COMMIT_BYTES (at
        least one)."""
        size = 0
        for taken, (arrival, _) in enumerate(self.waiting):
            size += len(arrival.raw)
            if taken == self.limit or (taken and size > GROUP_COMMIT_BYTES):
                break
        else:
            taken = len(self.waiting)
        group, self.waiting = self.waiting[:taken], self.waiting[taken:]
        return group

    async def settle(self) -> None:
        """Let the group being written finish (at shutdown)."""
        if self.writer is not None:
            await asyncio.wait([self.writer], timeout=30)


class InboundHandler:
    """aiosmtpd's handler hooks: refuse a client or recipient over its limit early, judge
    each recipient, store each message."""

    def __init__(self, executor: ThreadPoolExecutor, auth_executor: ThreadPoolExecutor):
        self.executor = executor
        self.auth_executor = auth_executor
        self.known = KnownRecipients()
        self.recent_usage = RecentUsage()
        self.group_commit = GroupCommit(self.store_group)

    async def _run(self, func, *args):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, _db_call, func, *args)

    async def store_group(self, arrivals: list[Arrival]) -> list[InboundMessage | str]:
        """Store a group of messages (one durable commit), before any 250; each one's row, or
        the reply refusing it. The worker's routing loop finds them (tracking/worker.py)."""
        receipts = await self._run(inbound_receive_many, arrivals)
        self.recent_usage.update(receipts.usage)
        return receipts.outcomes

    async def handle_MAIL(self, server: SMTP, session: Session, envelope, address, options):
        if refusal := self.recent_usage.mail_refusal(client_of(_peer(session.peer))):
            return _answered(refusal)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope, address, options):
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"  # the client sends the rest later: no refusal
        recipient = self.known.get(address)
        if recipient is None:
            try:
                recipient = await self._run(_resolve, address)
            except Exception:
                log.exception("recipient lookup failed for %s", address)
                return _answered("451 4.3.0 Temporary lookup failure, please try again later")
            if recipient is None:
                return _answered("550 5.1.1 No such recipient here")
            self.known.add(recipient)
        size = _declared_size(envelope.mail_options)
        if refusal := self.recent_usage.rcpt_refusal(recipient, size):
            return _answered(refusal)
        if recipient not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(recipient)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope):
        raw = envelope.original_content or b""
        details = Envelope(
            # aiosmtpd gives the null reverse-path of bounces and auto-replies as "<>".
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            helo=session.host_name or "",
            peer=_peer(session.peer),
        )
        loop = asyncio.get_running_loop()
        try:
            admission = await loop.run_in_executor(
                self.auth_executor, functools.partial(inbound_admit, raw=raw, envelope=details)
            )
        except Exception:
            log.exception("could not authenticate a message from %s", details.mail_from)
            return _answered("451 4.7.0 Sender not checked, please try again later")
        if admission.deferred:
            log.info("deferred a message from %s (%s): %s", details.peer, details.mail_from,
                     admission.reply)  # fmt: skip
            return _answered(admission.reply)
        arrival = Arrival(details, list(envelope.rcpt_tos), raw, admission)
        try:
            outcome = await self.group_commit.store(arrival)
        except Exception:
            log.exception("could not store a message from %s", details.mail_from)
            return _answered("451 4.3.0 Message not stored, please try again later")
        if isinstance(outcome, str):
            log.info("refused a message from %s (%s): %s", details.peer, details.mail_from, outcome)
            return _answered(outcome)
        if admission.refused:
            log.info("refused inbound %s: %s", outcome.pk, admission.reply)
            return _answered(admission.reply)
        if outcome.status == InboundMessage.Status.REFUSED:
            log.info(
                "refused inbound %s: %s",
                outcome.pk,
                outcome.error,
                extra={"inbound_id": outcome.pk, "outcome": "refused"},
            )
            return _answered(f"554 5.4.6 {outcome.error}")
        log.info(
            "stored inbound %s for %s",
            outcome.pk,
            ", ".join(envelope.rcpt_tos),
            extra={"inbound_id": outcome.pk, "outcome": "accepted"},
        )
        return _answered(f"250 2.0.0 OK queued as {outcome.pk}")


def _answered(reply: str) -> str:
    """Count the answer to a message (its DATA; a refusal at MAIL FROM or RCPT TO too) by
    outcome and, for a refusal, its enhanced status code (RFC 3463: a small fixed set of
    ours, so a bounded label), then give it."""
    code, _, rest = reply.partition(" ")
    outcome = {"2": "accepted", "4": "deferred"}.get(code[:1], "refused")
    reason = rest.split(" ", 1)[0] if outcome != "accepted" else ""
    if not re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reason or "x.x.x"):
        reason = code if outcome != "accepted" else ""
    INBOUND_MESSAGES.labels(outcome=outcome, reason=reason).inc()
    return reply


def _peer(peer) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


def _declared_size(mail_options: list[str]) -> int:
    """The SIZE a client declared at MAIL FROM (RFC 1870), or 0; aiosmtpd has checked it is
    a number within MAX_MESSAGE_SIZE."""
    for option in mail_options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


async def serve(host: str, port: int, *, ready=None, stop: asyncio.Event | None = None) -> None:
    """Listen on host:port until `stop` is set; `ready(port)` is called with the bound port
    (useful with port 0)."""
    executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="smtpd-db")
    auth_executor = ThreadPoolExecutor(max_workers=AUTH_THREADS, thread_name_prefix="smtpd-auth")
    handler = InboundHandler(executor, auth_executor)
    connections = OpenConnections()

    def new_session() -> SMTP:
        return SMTP(
            handler,
            data_size_limit=settings.MAX_MESSAGE_SIZE,
            hostname=settings.SMTP_HELO_NAME,
            ident="iovox inbound",
            timeout=60,
        )

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ConnectionGate(connections, new_session),
        host=host,
        port=port,
        family=socket.AF_INET if ":" not in host else socket.AF_INET6,
        reuse_address=True,
    )
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        server.close()
        await server.wait_closed()
        await handler.group_commit.settle()
        executor.shutdown(wait=True)
        auth_executor.shutdown(wait=True)
