"""Commits that need not wait for the disk.

Some writes are safe to lose in a database crash because the worker makes up for them: a lost
delivery outcome (the claim lapses and the message is tried again; the remote side sees a
duplicate with the same Message-ID, which is the at-least-once of all mail), a lost routing
(the inbound message is still pending, and routed again). For those, PostgreSQL may
acknowledge the COMMIT before its WAL is flushed: the write is still atomic and visible, just
not yet fsynced.
"""

from __future__ import annotations

from django.db import connections


def relax_commit_durability(using: str = "default") -> None:
    """Inside a transaction: let its COMMIT return before the WAL flush (PostgreSQL only)."""
    connection = connections[using]
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
