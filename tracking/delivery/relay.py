"""Delivery through the SMTP relay (DELIVERY_TRANSPORT=smtp).

The relay takes each message as an MX would, with our VERP return path, so its later bounces
come back as DSNs to our bounce domain and are read as today. Its replies decide the message as
an MX's do: 2xx `sent`, 4xx `queued` for a retry on EMAIL_RETRY_SCHEDULE, 5xx `undeliverable`.

Each delivery thread keeps its connection open between batches (the relay's TLS handshake and
AUTH cost more than a message), for IDLE_SECONDS at most, checked with a NOOP before reuse.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from tracking.delivery.smtp import RelayConnection, SmtpReply
from tracking.models import Message

if TYPE_CHECKING:
    from tracking.delivery.deliver import Outcomes

log = logging.getLogger(__name__)

IDLE_SECONDS = 30.0

_kept = threading.local()


def relay_deliver(messages: list[Message], outcomes: Outcomes) -> None:
    """Hand claimed messages to the relay over this thread's connection, writing each outcome.
    What the relay does not decide (no connection, a dropped one) stays `queued`."""
    connection, refused = _connection()
    if refused is not None:
        # Our configuration or the relay, not the messages: said once per batch in the log.
        log.warning(
            "the SMTP relay could not be used (%d messages stay queued): %s", len(messages), refused
        )
        for message in messages:
            outcomes.temporary(message, refused)
        return
    for index, message in enumerate(messages):
        reply = outcomes.attempt(connection, message)
        if reply is not None:
            outcomes.temporary(message, reply)
        if not connection.alive:
            for other in messages[index + 1 :]:
                outcomes.temporary(other, reply)
            break
    if connection.alive:
        _kept.connection, _kept.used = connection, time.monotonic()
        _kept.configuration = RelayConnection.configuration()


def relay_connections_close() -> None:
    """Close this thread's kept connection, if any (QUIT)."""
    connection = getattr(_kept, "connection", None)
    _kept.connection = None
    if connection is not None:
        connection.close()


def _connection() -> tuple[RelayConnection, SmtpReply | None]:
    """This thread's open connection if it is fresh and still answers, else a new one."""
    kept: RelayConnection | None = getattr(_kept, "connection", None)
    _kept.connection = None
    if kept is not None:
        fresh = time.monotonic() - _kept.used < IDLE_SECONDS
        if fresh and _kept.configuration == RelayConnection.configuration() and kept.usable():
            return kept, None
        kept.close()
    connection = RelayConnection()
    return connection, connection.open()
