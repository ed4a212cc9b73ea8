"""Worker tasks of inbound mail: thin, primary keys in, services called."""

from __future__ import annotations

from conversations import domains
from conversations.inbound import routing
from conversations.inbound.limits import usage_purge
from conversations.inbound.receive import inbound_messages_purge, inbound_retry_due
from tracking import worker


def routing_loop() -> int:
    """One run of the resident routing loop (tracking/worker.py): routes inbound mail as the
    SMTP server stores it, and deferred mail once its retry is due."""
    return worker.loop_run("routing", routing_turn)


def routing_turn() -> bool:
    """Deferred messages whose retry has come back to pending, then the pending routed; False
    when there was nothing to route."""
    inbound_retry_due()
    return routing.inbound_route_pending() > 0


def inbound_purge() -> int:
    """Scheduled: drop raw inbound mail past its retention (how many messages), and the
    limits' usage counts past their window."""
    usage_purge()
    return inbound_messages_purge()


def check_domains() -> int:
    """Scheduled: our domains' DNS checked (as many as fit in the run's time); how many."""
    return len(domains.domains_check(time_limit=domains.RUN_TIME_LIMIT))
