"""The inbound SMTP server (aiosmtpd).

One event loop serves every connection, so nothing here blocks it: each database step (is this
recipient ours? store these messages) runs in a small thread pool. A recipient is judged at
RCPT TO on its own (550 5.1.1 when it is not an alias, a proxy address or a bounce address of
ours); the message is stored before the 250 answer, and a failure to store it is a 451 so the
sender retries: an accepted message is never lost. Routing happens afterwards, in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

from aiosmtpd.smtp import SMTP, Session
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from django.conf import settings
from django.db import close_old_connections, connection

from conversations.inbound.mime import Envelope
from conversations.inbound.receive import Arrival, inbound_enqueue_routing, inbound_receive_many
from conversations.inbound.recipients import address_normalize, recipient_resolve
from conversations.models import InboundMessage
from tracking.caching import ProcessCache

log = logging.getLogger("conversations.smtpd")

# Threads that talk to the database for the event loop; each keeps its own connection.
DB_THREADS = 8
# RFC 5321 section 4.5.3.1.8: at least 100 recipients must be accepted; more get a 452, and
# the client sends the rest in another transaction.
MAX_RECIPIENTS = 100
# Messages stored in one transaction at most (see GroupCommit).
GROUP_COMMIT_LIMIT = 100
# How long an address found to be ours is believed without asking the database again (see
# KnownRecipients).
RECIPIENT_CACHE_SECONDS = 10.0


# An in-memory SQLite database (the test suite's) is shared between threads with table locks
# and no busy timeout: its users must take turns.
_MEMORY_DB_TURN = threading.Lock()


def _turn():
    in_memory = connection.vendor == "sqlite" and connection.is_in_memory_db()
    return _MEMORY_DB_TURN if in_memory else nullcontext()


@contextmanager
def _db_job():
    # Like a request: drop a connection that is broken or past CONN_MAX_AGE, before and after.
    with _turn():
        close_old_connections()
        try:
            yield
        finally:
            close_old_connections()


def _resolve(address: str) -> str | None:
    """The address as we know it (normalized), or None when it is not ours."""
    with _db_job():
        recipient = recipient_resolve(address)
        return recipient.address if recipient else None


def _store(arrivals: list[Arrival]) -> list[InboundMessage]:
    """Store the messages in one transaction, then wake the worker (before any 250)."""
    with _db_job():
        stored = inbound_receive_many(arrivals)
        if any(inbound.status == InboundMessage.Status.PENDING for inbound in stored):
            inbound_enqueue_routing()  # never raises: the sweep makes up for a lost task
        return stored


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
    """Stores the messages of concurrent sessions together: one transaction, one durable
    commit and one worker wake-up for all that arrived while the previous group was being
    written (classic group commit). Each session still gets its answer only once its own
    row has committed; when a group fails, every message in it gets the failure (a 451)."""

    def __init__(self, run, limit: int = GROUP_COMMIT_LIMIT):
        self.run = run
        self.limit = limit
        self.waiting: list[tuple[Arrival, asyncio.Future]] = []
        self.writer: asyncio.Task | None = None

    async def store(self, arrival: Arrival) -> InboundMessage:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((arrival, future))
        if self.writer is None:
            self.writer = asyncio.ensure_future(self._write())
        return await future

    async def _write(self) -> None:
        try:
            while self.waiting:
                group, self.waiting = self.waiting[: self.limit], self.waiting[self.limit :]
                try:
                    stored = await self.run(_store, [arrival for arrival, _ in group])
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

    async def settle(self) -> None:
        """Let the group being written finish (at shutdown)."""
        if self.writer is not None:
            await asyncio.wait([self.writer], timeout=30)


class InboundHandler:
    """aiosmtpd hooks: judge each recipient, store each message, wake the worker."""

    def __init__(self, executor: ThreadPoolExecutor):
        self.executor = executor
        self.known = KnownRecipients()
        self.group_commit = GroupCommit(self._run)

    async def _run(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope, address, options):
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        recipient = self.known.get(address)
        if recipient is None:
            try:
                recipient = await self._run(_resolve, address)
            except Exception:
                log.exception("recipient lookup failed for %s", address)
                return "451 4.3.0 Temporary lookup failure, please try again later"
            if recipient is None:
                return "550 5.1.1 No such recipient here"
            self.known.add(recipient)
        if recipient not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(recipient)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope):
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        details = Envelope(
            # aiosmtpd gives the null reverse-path of bounces and auto-replies as "<>".
            mail_from="" if envelope.mail_from in (None, "<>") else envelope.mail_from,
            helo=session.host_name or "",
            peer=_peer(session.peer),
        )
        try:
            inbound = await self.group_commit.store(Arrival(details, list(envelope.rcpt_tos), raw))
        except Exception:
            log.exception("could not store a message from %s", details.mail_from)
            return "451 4.3.0 Message not stored, please try again later"
        if inbound.status == InboundMessage.Status.REFUSED:
            log.info("refused inbound %s: %s", inbound.pk, inbound.error)
            return f"554 5.4.6 {inbound.error}"
        log.info("stored inbound %s for %s", inbound.pk, ", ".join(envelope.rcpt_tos))
        return f"250 2.0.0 OK queued as {inbound.pk}"


def _peer(peer) -> str:
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "")


async def serve(host: str, port: int, *, ready=None, stop: asyncio.Event | None = None) -> None:
    """Listen on host:port until `stop` is set; `ready(port)` is called with the bound port
    (useful with port 0)."""
    executor = ThreadPoolExecutor(max_workers=DB_THREADS, thread_name_prefix="smtpd-db")
    handler = InboundHandler(executor)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=settings.MAX_MESSAGE_SIZE,
            hostname=settings.SMTP_HELO_NAME,
            ident="iovox inbound",
            timeout=60,
        ),
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
