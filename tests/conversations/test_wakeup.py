"""The SMTP server wakes the worker once per message when it is idle, and queues no second
routing task while one waits to start."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_q.models import OrmQ

from conversations import tasks
from conversations.models import InboundMessage
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
        send(inbound_server, 3)
    assert routing_tasks() == 1
