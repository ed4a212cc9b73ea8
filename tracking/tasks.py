"""Worker tasks (django-q2). Thin: they take primary keys or names and call a service.

django-q2 delivers a task at least once, so each task is idempotent: delivery claims its
messages by conditional UPDATE, and a task for a message that is already handled does nothing.
"""

from __future__ import annotations

import math

from django.conf import settings
from django_q.tasks import async_task

from tracking.buffering import AfterResponseBuffer
from tracking.delivery.deliver import domain_backlog, due_domains, messages_deliver
from tracking.delivery.wakeup import delivery_wakeups


def wake_delivery(domain: str) -> None:
    """Called on commit of the transaction that accepted a message to `domain`: queue a
    delivery task for the domain unless one is queued already and has not started (the
    delivery sweep makes up for a task lost in a crash)."""
    delivery_wakeups.wake(
        domain,
        lambda: async_task("tracking.tasks.deliver_domain", domain, task_name=f"deliver {domain}"),
    )


def wake_delivery_soon(domain: str) -> None:
    """On commit of an accepted message: `wake_delivery` for its domain; within a request
    (and DELIVERY_WAKEUP_INTERVAL above 0) with this process's next batch of wake-ups, after
    the response and within the interval (tracking/buffering.py): one check per domain per
    batch rather than one per message. Elsewhere (the worker routing inbound mail) at once.
    A wake-up lost with its process (SIGKILL) delays the message until the next sweep, never
    loses it: the message is committed already."""
    if _wakeups.enabled:
        _wakeups.add(domain)
    else:
        wake_delivery(domain)


def _wake_domains(domains: list[str]) -> int:
    unique = list(dict.fromkeys(domains))
    for domain in unique:
        wake_delivery(domain)
    return len(unique)


_wakeups: AfterResponseBuffer[str] = AfterResponseBuffer(
    name="delivery-wakeups",
    handle=_wake_domains,
    interval=lambda: settings.DELIVERY_WAKEUP_INTERVAL,
    batch=lambda: 1000,
    limit=lambda: 100_000,
)


def deliver_message(message_pk: int) -> int:
    """Deliver this message, with other due messages to its domain over the same connection."""
    return messages_deliver(message_pk=message_pk)


def deliver_domain(domain: str, fan_out: bool = True) -> int:
    """Deliver due messages to one domain, a bounded number of batches. With `fan_out`, a
    backlog of more than one batch also gets helper tasks (up to the worker count), so
    batches go out in parallel over several connections."""
    if fan_out:
        delivery_wakeups.clear(domain)
        helpers = min(
            int(settings.Q_CLUSTER.get("workers", 1)) - 1,
            math.ceil(domain_backlog(domain=domain) / settings.DELIVERY_BATCH_SIZE) - 1,
        )
        for _ in range(max(0, helpers)):
            async_task("tracking.tasks.deliver_domain", domain, False, task_name=f"help {domain}")
    total = 0
    for _ in range(20):
        attempted = messages_deliver(domain=domain)
        total += attempted
        if attempted < settings.DELIVERY_BATCH_SIZE:
            break
    return total


def sweep_due_messages() -> int:
    """Scheduled: find due messages (lost tasks, retries whose time has come, claims of a dead
    worker) and queue a delivery task per domain."""
    domains = due_domains()
    for domain in domains:
        async_task("tracking.tasks.deliver_domain", domain, task_name=f"sweep {domain}")
    return len(domains)
