"""Worker tasks (django-q2). Thin: they take primary keys or names and call a service.

django-q2 delivers a task at least once, so each task is idempotent: delivery claims its
messages by conditional UPDATE, and a task for a message that is already handled does nothing.
"""

from __future__ import annotations

import math

from django.conf import settings
from django.db import transaction
from django_q.tasks import async_task

from tracking.delivery.deliver import due_domains, messages_deliver
from tracking.delivery.durability import relax_commit_durability

BROKER_DB = settings.Q_CLUSTER.get("orm", "default")


def enqueue_delivery(message_pk: int) -> None:
    """Called on commit of the transaction that accepted the message. The task row need not
    be fsynced: the message already is, and the sweep finds it if a crash lost the task."""
    with transaction.atomic(using=BROKER_DB):
        if not settings.Q_CLUSTER.get("redis"):
            relax_commit_durability(BROKER_DB)
        async_task("tracking.tasks.deliver_message", message_pk, task_name=f"deliver {message_pk}")


def deliver_message(message_pk: int) -> int:
    """Deliver this message, with other due messages to its domain over the same connection."""
    return messages_deliver(message_pk=message_pk)


def deliver_domain(domain: str) -> int:
    """Deliver due messages to one domain, a bounded number of batches."""
    total = 0
    for _ in range(20):
        attempted = messages_deliver(domain=domain)
        total += attempted
        if attempted < settings.DELIVERY_BATCH_SIZE:
            break
    return total


def sweep_due_messages() -> int:
    """Scheduled: find due messages (lost tasks, retries whose time has come, claims of a dead
    worker) and enqueue delivery per domain, several tasks for a busy domain."""
    workers = int(settings.Q_CLUSTER.get("workers", 1))
    enqueued = 0
    for domain, count in due_domains().items():
        batches = math.ceil(count / (settings.DELIVERY_BATCH_SIZE * 20))
        for _ in range(max(1, min(batches, workers))):
            async_task("tracking.tasks.deliver_domain", domain, task_name=f"sweep {domain}")
            enqueued += 1
    return enqueued
