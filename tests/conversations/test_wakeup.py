"""The SMTP server wakes the worker once per message when it is idle, and queues no second
routing task while one waits to start."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_q.models import OrmQ

from conversations import tasks
from conversations.inbound.receive import routing_wakeups
from conversations.models import InboundMessage, RoutingWakeup
from tests.factories import LinkFactory

ALIAS = "wake_up@iovox.email"


@pytest.fixture
def alias(transactional_db) -> str:
    LinkFactory(email_address=ALIAS)
    return ALIAS


def routing_tasks() -> int:
    return sum(
        task.func() == "conversations.tasks.inbound_route_pending" for task in OrmQ.objects.all()
    )


def send(server, n: int) -> None:
    raw = b"Subject: message %d\r\nMessage-ID: <w%d@example.net>\r\n\r\nhello\r\n" % (n, n)
    server.send(raw, mail_from="s@example.net", to=ALIAS)


def test_an_idle_worker_is_woken_by_the_first_message(inbound_server, alias):
    send(inbound_server, 1)
    assert routing_tasks() == 1


def test_messages_stored_while_a_task_waits_queue_no_other(inbound_server, alias):
    for n in range(5):
        send(inbound_server, n)
    assert routing_tasks() == 1
    assert tasks.inbound_route_pending() == 5  # the one task routes them all


def test_once_the_task_has_started_the_next_message_queues_a_new_one(inbound_server, alias):
    send(inbound_server, 1)
    tasks.inbound_route_pending()
    send(inbound_server, 2)
    assert routing_tasks() == 2
    assert InboundMessage.objects.filter(status=InboundMessage.Status.PENDING).count() == 1


def test_a_lost_routing_task_is_queued_again_after_a_while(inbound_server, alias):
    send(inbound_server, 1)
    OrmQ.objects.all().delete()  # the task is lost
    send(inbound_server, 2)
    assert routing_tasks() == 0  # still believed queued: the sweep covers it meanwhile
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        routing_wakeups.seen.clear()  # what it saw six minutes ago (ROUTING_WAKEUP_TRUST)
        send(inbound_server, 3)
    assert routing_tasks() == 1


def test_a_message_stored_while_the_task_routes_queues_no_second_task_and_is_not_left(
    inbound_server, alias, monkeypatch
):
    from conversations.inbound import routing

    send(inbound_server, 1)
    OrmQ.objects.all().delete()  # the task has been taken by a worker: it runs now
    route = routing.inbound_route_pending

    def route_and_meanwhile_receive() -> int:
        routed = route()
        send(inbound_server, 2)  # after the task's last look, while it holds the wake-up
        assert routing_tasks() == 0
        return routed

    monkeypatch.setattr(routing, "inbound_route_pending", route_and_meanwhile_receive)
    assert tasks.inbound_route_pending() == 1
    assert routing_tasks() == 1  # queued at the task's end, for message 2
    assert InboundMessage.objects.filter(status=InboundMessage.Status.PENDING).count() == 1


def test_a_wake_up_seen_a_moment_ago_is_trusted_without_a_query(
    transactional_db, django_assert_num_queries, monkeypatch
):
    from conversations.inbound.receive import ROUTING

    # Longer than the 50 ms deployed, so that a slow machine still makes the second call
    # within it.
    monkeypatch.setattr(routing_wakeups, "trust", 0.5)
    enqueued: list[int] = []
    routing_wakeups.wake(ROUTING, lambda: enqueued.append(1))  # asks, claims, enqueues
    with django_assert_num_queries(0):
        routing_wakeups.wake(ROUTING, lambda: enqueued.append(2))
    assert enqueued == [1]
    started = time.monotonic()
    routing_wakeups.finish(ROUTING)  # the task lets it go, and waits out the trust
    assert time.monotonic() - started >= 0.5
    routing_wakeups.wake(ROUTING, lambda: enqueued.append(3))  # asked again: none, so queued
    assert enqueued == [1, 3]


def test_a_wake_up_is_trusted_only_from_before_it_was_looked_at(transactional_db, monkeypatch):
    """The trust runs from the moment before the query, so a slow answer shortens it."""
    from tracking import caching
    from tracking.delivery import wakeup

    now = [1000.0]
    monkeypatch.setattr(caching.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(wakeup.time, "monotonic", lambda: now[0])
    pending = routing_wakeups.pending

    def slow_pending(key: str) -> bool:
        now[0] += routing_wakeups.trust * 1.01  # the answer took longer than the trust
        return pending(key)

    monkeypatch.setattr(routing_wakeups, "pending", slow_pending)
    RoutingWakeup.objects.create(name="inbound")
    routing_wakeups.wake("inbound", lambda: None)
    assert routing_wakeups.seen.get("inbound") is None


def test_a_routing_task_that_fails_lets_its_wake_up_go(inbound_server, alias, monkeypatch):
    from conversations.inbound import routing

    send(inbound_server, 1)

    def broken() -> int:
        raise RuntimeError("routing exploded")

    monkeypatch.setattr(routing, "inbound_route_pending", broken)
    with pytest.raises(RuntimeError):
        tasks.inbound_route_pending()
    assert not RoutingWakeup.objects.exists()  # so the next message queues a task at once
