"""The worker's resident loops: delivery and inbound routing, each a django-q2 task that keeps
going.

django-q2 runs a task when it is enqueued and looks at its schedules twice a minute. Mail wants
more: a message accepted now should leave within a second, a retry should go when its
schedule says, and a backlog of any size should drain with nobody enqueueing anything. So two
tasks run all the time:

- `tracking.tasks.delivery_loop` (`delivery_loop` below). Each turn it expires the queued
  messages whose EMAIL_EXPIRY has passed, then claims a batch of one domain's due messages
  for a free connection (`Delivery.next_domain`: the domains in turn, alternating with the
  domain of whatever fell due last), so neither a backlog to one domain nor one spread over
  many holds a new message back by more than a batch or two. DELIVERY_CONNECTIONS threads
  deliver the batches (tracking/delivery/deliver.py), each with its own SMTP and database
  connections, so a slow MX holds up only its own thread.
- `conversations.tasks.routing_loop`, which routes the inbound mail the SMTP server stored.

A loop with nothing to do sleeps POLL seconds and looks again. That is how it finds new mail,
retries that fell due and the claims of a worker that died: nothing wakes it; the API and the
SMTP server only commit rows.

A loop runs for RUN_SECONDS, then enqueues its successor and ends, so a graceful stop of the
cluster waits for no more than that (and the batches in flight). At most DELIVERY_LOOPS runs
of the delivery loop (each a process, so a core), and one of the routing loop, work at a time
in the whole system: each holds a WorkerLease row, taken by conditional UPDATE, renewed every
RENEW_EVERY seconds, and free again LEASE_SECONDS after its holder stops renewing it. A run
that finds every slot held ends at once, unless a holder has stopped renewing (STALE_SECONDS):
then it waits for that lease to run out and takes the slot.

Runs are enqueued by the run before (its successor); by every worker process as it starts
(django-q2's post_spawn: a cluster starting, a dead worker replaced), so the loops start with
the cluster; for a loop whose run died holding its lease (a worker killed, on this machine or
another: `loops_revive`), by any loop's run as it ends and by `manage.py worker`'s watchdog
every LEASE_SECONDS; and by a one-minute schedule (tracking/schedules.py), the safety net.
Each loop occupies a worker process: Q_WORKERS must leave room for other tasks (a system check
warns).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.core import checks
from django.db import close_old_connections, connection
from django.db.models import Min, Q
from django.utils import timezone
from django_q.tasks import async_task

from tracking.delivery.claims import (
    claims_renew,
    freshest_due_domain,
    messages_claim,
    next_due_domain,
)
from tracking.delivery.deliver import batch_deliver, messages_expire
from tracking.delivery.relay import relay_connections_close
from tracking.models import Message, WorkerLease
from tracking.webhooks.sender import WebhookSender

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks when there is nothing to do (django-q2's ORM broker: 0.2)
RUN_SECONDS = 15.0
LEASE_SECONDS = 5.0
RENEW_EVERY = 0.5
# A lease not renewed for this long has likely lost its run (its worker killed).
STALE_SECONDS = 3 * RENEW_EVERY
# How long a delivery run waits for its batches in flight once it has ended, well within
# django-q2's task timeout. A thread still sending after that is left to finish on its own;
# its messages' claims lapse and they are tried again.
FINISH_SECONDS = 180.0


@dataclass(frozen=True)
class ResidentLoop:
    name: str
    task: str  # the dotted path of the task that runs it (tracking does not import other apps)
    slots: Callable[[], int] = lambda: 1  # how many runs may work at once


LOOPS = {
    loop.name: loop
    for loop in [
        ResidentLoop("delivery", "tracking.tasks.delivery_loop", lambda: settings.DELIVERY_LOOPS),
        ResidentLoop("routing", "conversations.tasks.routing_loop"),
        ResidentLoop("webhooks", "tracking.tasks.webhook_loop"),
    ]
}


# --- Running a loop -------------------------------------------------------------------------


def loop_run(name: str, turn: Callable[[], bool]) -> int:
    """Take a slot of loop `name` and call `turn` until RUN_SECONDS have passed, sleeping POLL
    seconds after a turn that found nothing to do (returned False); then enqueue the next run.
    Returns how many turns were taken: 0 when every slot was held."""
    loop = LOOPS[name]
    lease = Lease.take(loop)
    if lease is None:
        return 0
    turns = 0
    deadline = time.monotonic() + RUN_SECONDS
    try:
        while time.monotonic() < deadline:
            try:
                if not lease.keep():
                    return turns  # it lapsed, and another run holds the slot now
                busy = turn()
            except Exception:  # the database away, say: try again after a pause
                log.exception("%s loop: a turn failed", name)
                close_old_connections()
                busy = False
                time.sleep(1.0)
            turns += 1
            if not busy:
                time.sleep(POLL)
    finally:
        lease.release()
    loop_enqueue(loop)  # the successor, once the slot is free for it
    loops_revive()
    return turns


def loops_watch(stop: threading.Event) -> None:
    """`manage.py worker`'s watchdog thread: every LEASE_SECONDS, `loops_revive`. So a loop
    whose run died with another worker is taken over within seconds even when none of this
    worker's own loops is running (and so ending runs) to notice it."""
    while not stop.wait(LEASE_SECONDS):
        loops_revive()
        close_old_connections()


def loops_revive() -> None:
    """Enqueue a run of each loop one of whose leases has run out while still held: its
    run died with its worker (killed, its machine gone), and its successor with it. A run
    takes the slot over, so a surviving worker resumes the loops of a dead one within
    RUN_SECONDS + LEASE_SECONDS rather than at the one-minute schedule. (A lease released
    normally has no holder; its successor is on its way.)"""
    try:
        lapsed = set(
            WorkerLease.objects.filter(
                holder__isnull=False, expires_at__lt=timezone.now()
            ).values_list("name", flat=True)
        )
    except Exception:  # the schedule starts them anyway
        log.exception("could not look for lapsed leases")
        return
    for name in {lease.split("/", 1)[0] for lease in lapsed}:
        if name in LOOPS:
            loop_enqueue(LOOPS[name])


def loop_enqueue(loop: ResidentLoop) -> None:
    """Enqueue a run of `loop`. A failure is logged: the one-minute schedule starts one."""
    try:
        async_task(loop.task, task_name=f"{loop.name} loop")
    except Exception:
        log.exception("could not enqueue the %s loop", loop.name)


def loops_start(**kwargs) -> None:
    """django-q2's post_spawn, in each worker process as it starts: enqueue a run of every loop
    (a run that finds its loop going ends at once)."""
    for loop in LOOPS.values():
        loop_enqueue(loop)


@dataclass
class Lease:
    """A slot of a loop, held by one run."""

    name: str
    holder: uuid.UUID
    renewed: float = field(default_factory=time.monotonic)

    @classmethod
    def take(cls, loop: ResidentLoop) -> Lease | None:
        """A free slot of `loop`, or None when a live run holds every one."""
        names = [f"{loop.name}/{n}" for n in range(max(1, loop.slots()))]
        WorkerLease.objects.bulk_create(
            [WorkerLease(name=name) for name in names], ignore_conflicts=True
        )
        holder = uuid.uuid4()
        if lease := cls._take_free(names, holder):
            return lease
        # Every slot is held. One not renewed for STALE_SECONDS has likely lost its run (a
        # worker killed): wait for its lease to run out, and try again. A live holder is left
        # alone; should it die just now after all, the one-minute schedule takes over.
        stale = timezone.now() + timedelta(seconds=LEASE_SECONDS - STALE_SECONDS)
        lapsing = WorkerLease.objects.filter(name__in=names, expires_at__lt=stale)
        lapses_at = lapsing.aggregate(at=Min("expires_at"))["at"]
        if lapses_at is None:
            return None
        time.sleep(max(0.0, (lapses_at - timezone.now()).total_seconds()) + 0.05)
        return cls._take_free(names, holder)

    @classmethod
    def _take_free(cls, names: list[str], holder: uuid.UUID) -> Lease | None:
        now = timezone.now()
        free = Q(holder__isnull=True) | Q(expires_at__lte=now)
        for name in names:
            taken = WorkerLease.objects.filter(free, name=name).update(
                holder=holder, expires_at=now + timedelta(seconds=LEASE_SECONDS)
            )
            if taken:
                return cls(name, holder)
        return None

    def keep(self) -> bool:
        """Renew the lease (every RENEW_EVERY seconds); False when another run holds it now."""
        if time.monotonic() - self.renewed < RENEW_EVERY:
            return True
        self.renewed = time.monotonic()
        expires_at = timezone.now() + timedelta(seconds=LEASE_SECONDS)
        held = WorkerLease.objects.filter(name=self.name, holder=self.holder)
        return held.update(expires_at=expires_at) == 1

    def release(self) -> None:
        try:
            WorkerLease.objects.filter(name=self.name, holder=self.holder).update(
                holder=None, expires_at=None
            )
        except Exception:  # it lapses by itself
            log.exception("could not release %s", self.name)


# --- The delivery loop ----------------------------------------------------------------------


def delivery_loop() -> int:
    """One run of the delivery loop; the turns it took (0: another run holds the slot)."""
    connections = Connections(settings.DELIVERY_CONNECTIONS)
    try:
        return loop_run("delivery", Delivery(connections).turn)
    finally:
        connections.close()  # after its successor has been enqueued: it takes over meanwhile


class Delivery:
    """The turns of the delivery loop, handing batches to `connections`."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.domain = ""  # where the round of the domains has got to
        self.by_freshness = False

    def turn(self) -> bool:
        """Expire overdue messages, renew the claims in flight, and claim one batch for a free
        connection. False when nothing was due."""
        messages_expire()
        self.connections.renew()
        if not self.connections.reserve(timeout=POLL):
            return True  # every connection busy: look again when one is free
        domain = self.next_domain()
        batch = messages_claim(domain=domain) if domain else []
        if not batch:
            self.connections.unreserve()
            return False
        self.connections.submit(batch)
        return True

    def next_domain(self) -> str | None:
        """Every other turn, the domain of the message that fell due last (just accepted, or
        a retry whose time has just come), so it goes out within a turn or two however much
        is waiting; the other turns go round the domains with due mail, so none waits for
        another's backlog. A domain already using half the connections gives way to the next
        in the round, unless it is the only one with due mail."""
        self.by_freshness = not self.by_freshness
        domain = freshest_due_domain() if self.by_freshness else None
        if domain is None:
            domain = self.domain = next_due_domain(after=self.domain) or ""
        if self.connections.busy_with(domain) >= max(1, self.connections.size // 2):
            domain = self.domain = next_due_domain(after=domain) or domain
        return domain or None


class Connections:
    """Up to `size` threads delivering one claimed batch each, every thread with its own
    database connection (closed when it ends). The loop's thread renews the claims of the
    batches in flight, so they lapse only if the whole process dies."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.free = threading.Semaphore(self.size)
        self.batches: queue.SimpleQueue[list[Message] | None] = queue.SimpleQueue()
        self.in_flight: dict[int, list[Message]] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.renewed = time.monotonic()

    def reserve(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a free connection, and keep it for `submit`."""
        return self.free.acquire(timeout=timeout)

    def unreserve(self) -> None:
        self.free.release()

    def submit(self, batch: list[Message]) -> None:
        with self.lock:
            self.in_flight[id(batch)] = batch
        if len(self.threads) < self.size:
            thread = threading.Thread(target=self._deliver, name="delivery", daemon=True)
            thread.start()
            self.threads.append(thread)
        self.batches.put(batch)

    def busy_with(self, domain: str) -> int:
        """How many batches to `domain` are in flight."""
        with self.lock:
            return sum(batch[0].recipient_domain == domain for batch in self.in_flight.values())

    def renew(self) -> None:
        """Renew the claims in flight, a third of DELIVERY_LOCK_SECONDS after the last time."""
        if time.monotonic() - self.renewed < settings.DELIVERY_LOCK_SECONDS / 3:
            return
        self.renewed = time.monotonic()
        with self.lock:
            messages = [message for batch in self.in_flight.values() for message in batch]
        claims_renew(messages)

    def close(self) -> None:
        """Let the threads finish their batches (for FINISH_SECONDS at most), then end them."""
        for _ in self.threads:
            self.batches.put(None)
        deadline = time.monotonic() + FINISH_SECONDS
        for thread in self.threads:
            while thread.is_alive() and time.monotonic() < deadline:
                thread.join(timeout=1.0)
                try:
                    self.renew()
                except Exception:
                    log.exception("could not renew the claims in flight")

    def _deliver(self) -> None:
        try:
            while (batch := self.batches.get()) is not None:
                try:
                    batch_deliver(batch)
                except Exception:  # its messages are tried again once their claims lapse
                    log.exception("delivering a batch to %s failed", batch[0].recipient_domain)
                    close_old_connections()
                finally:
                    with self.lock:
                        del self.in_flight[id(batch)]
                    self.free.release()
        finally:
            relay_connections_close()
            connection.close()


# --- The webhook loop -----------------------------------------------------------------------


def webhook_loop() -> int:
    """One run of the webhook loop: events posted to customers' endpoints by the sender's own
    threads (tracking/webhooks/sender.py), so a slow endpoint never holds up mail."""
    sender = WebhookSender()
    try:
        return loop_run("webhooks", sender.turn)
    finally:
        sender.close()  # after its successor has been enqueued: it takes over meanwhile


# --- Set-up ---------------------------------------------------------------------------------


def check_worker_count(**kwargs) -> list[checks.CheckMessage]:
    """Q_WORKERS must leave worker processes for other tasks beside the resident loops."""
    loops = sum(max(1, loop.slots()) for loop in LOOPS.values())
    workers = int(settings.Q_CLUSTER.get("workers", 1))
    if workers > loops:
        return []
    return [
        checks.Warning(
            f"Q_WORKERS={workers}: the worker's resident loops take {loops} worker processes, "
            "leaving none for other tasks (purges, and the loops' own successors).",
            hint=f"Set Q_WORKERS to {loops + 2} or more.",
            id="tracking.W001",
        )
    ]
