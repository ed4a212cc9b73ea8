"""The inbound SMTP server (aiosmtpd).

One event loop serves every connection, so nothing here blocks it: each database step (is this
recipient ours? store this message) runs in a small thread pool. A recipient is judged at RCPT
TO on its own (550 5.1.1 when it is not an alias, a proxy address or a bounce address of ours);
the message is stored before the 250 answer, and a failure to store it is a 451 so the sender
retries: an accepted message is never lost. Routing happens afterwards, in the worker.
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
from conversations.inbound.receive import inbound_enqueue_routing, inbound_receive
from conversations.inbound.recipients import recipient_resolve
from conversations.models import InboundMessage

log = logging.getLogger("conversations.smtpd")

# Threads that talk to the database for the event loop; each keeps its own connection.
DB_THREADS = 8
# RFC 5321 section 4.5.3.1.8: at least 100 recipients must be accepted; more get a 452, and
# the client sends the rest in another transaction.
MAX_RECIPIENTS = 100


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


def _resolve(address: str):
    with _db_job():
        return recipient_resolve(address)


def _store(envelope: Envelope, recipients: list[str], raw: bytes) -> InboundMessage:
    with _db_job():
        return inbound_receive(envelope=envelope, recipients=recipients, raw=raw)


def _enqueue_routing() -> None:
    with _db_job():
        inbound_enqueue_routing()


class RoutingWakeup:
    """Wakes the worker after messages are stored, coalescing under load.

    A quiet server enqueues one routing task per message, before its 250 reply. While an
    enqueue is in flight, further messages only mark it dirty, and one more enqueue follows
    the current one: every committed message is covered by a task enqueued after its commit
    (the task looks for pending messages when it runs), at one task per round trip rather
    than one per message.
    """

    def __init__(self, run):
        self.run = run
        self.in_flight = False
        self.dirty = False
        self.follow_up: asyncio.Task | None = None

    async def request(self) -> None:
        if self.in_flight:
            self.dirty = True
            return
        self.in_flight, self.dirty = True, False
        try:
            await self.run(_enqueue_routing)
        finally:
            self.in_flight = False
            if self.dirty:
                self.follow_up = asyncio.ensure_future(self._follow_up())

    async def _follow_up(self) -> None:
        try:
            await self.request()
        except Exception:  # the messages are safe; the sweep routes them within minutes
            log.exception("could not wake the worker")

    async def settle(self) -> None:
        """Let a follow-up enqueue finish (at shutdown)."""
        for _ in range(10):  # each follow-up may have started one more
            if self.follow_up is None or self.follow_up.done():
                return
            await asyncio.wait([self.follow_up], timeout=5)


class InboundHandler:
    """aiosmtpd hooks: judge each recipient, store each message, wake the worker."""

    def __init__(self, executor: ThreadPoolExecutor):
        self.executor = executor
        self.wakeup = RoutingWakeup(self._run)

    async def _run(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def handle_RCPT(self, server: SMTP, session: Session, envelope, address, options):
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        try:
            recipient = await self._run(_resolve, address)
        except Exception:
            log.exception("recipient lookup failed for %s", address)
            return "451 4.3.0 Temporary lookup failure, please try again later"
        if recipient is None:
            return "550 5.1.1 No such recipient here"
        if recipient.address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(recipient.address)
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
            inbound = await self._run(_store, details, list(envelope.rcpt_tos), raw)
        except Exception:
            log.exception("could not store a message from %s", details.mail_from)
            return "451 4.3.0 Message not stored, please try again later"
        if inbound.status == InboundMessage.Status.REFUSED:
            log.info("refused inbound %s: %s", inbound.pk, inbound.error)
            return f"554 5.4.6 {inbound.error}"
        log.info("stored inbound %s for %s", inbound.pk, ", ".join(envelope.rcpt_tos))
        try:
            await self.wakeup.request()
        except Exception:  # the message is safe; the sweep routes it within minutes
            log.exception("could not wake the worker for inbound %s", inbound.pk)
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
        await handler.wakeup.settle()
        executor.shutdown(wait=True)
