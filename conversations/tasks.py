"""Worker tasks of inbound mail: thin, primary keys in, services called."""

from __future__ import annotations

from conversations import domains
from conversations.inbound import routing
from conversations.inbound.receive import inbound_retry_due
from conversations.retention import purge_run
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


def purge() -> dict[str, int]:
    """Scheduled: every kind of row past its retention, in bounded batches (rows per kind)."""
    return purge_run()


def check_domains() -> int:
    """Scheduled: our domains' DNS checked (as many as fit in the run's time); how many."""
    return len(domains.domains_check(time_limit=domains.RUN_TIME_LIMIT))
