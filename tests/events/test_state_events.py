"""The state machine writes the event of every change in the change's transaction: a batch
with one SELECT and one INSERT, nothing when no endpoint wants it; a change that loses its
race writes none."""

from __future__ import annotations

import pytest
from django.db import transaction

from tests.factories import MessageFactory
from tracking.delivery.state import Transition, message_transition, messages_transition
from tracking.events import account_event_types
from tracking.models import Disposition, Event
from tracking.webhooks.services import webhook_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def cached(settings):
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 60


def batch(account, n=10):
    return [
        Transition(MessageFactory(account=account, link__node__account=account), Disposition.SENT)
        for _ in range(n)
    ]


def test_a_batch_without_subscribers_costs_no_query(alice, cached, django_assert_num_queries):
    transitions = batch(alice.account)
    account_event_types(alice.account.pk)  # known to this process already
    with django_assert_num_queries(4):  # savepoint, SELECT FOR UPDATE, UPDATE, release
        assert all(messages_transition(transitions))
    assert not Event.objects.exists()


def test_a_batch_writes_its_events_with_one_select_and_one_insert(
    alice, receiver, cached, django_assert_num_queries
):
    webhook_create(account=alice.account, url=receiver.url, events=["email.sent"])
    transitions = batch(alice.account)
    account_event_types(alice.account.pk)
    with django_assert_num_queries(6):  # ... and the messages' rows, and the INSERT
        assert all(messages_transition(transitions))
    events = Event.objects.order_by("pk")
    assert [e.type for e in events] == ["email.sent"] * 10
    assert {e.data["message_id"] for e in events} == {
        str(t.message.message_id) for t in transitions
    }
    assert all(e.data["disposition"] == "sent" for e in events)


def test_a_change_that_rolls_back_leaves_no_event(alice, receiver):
    webhook_create(account=alice.account, url=receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    with pytest.raises(RuntimeError), transaction.atomic():
        message_transition(message=message, to=Disposition.QUEUED)
        raise RuntimeError("the worker dies before the commit")
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED
    assert not Event.objects.exists()


def test_a_change_that_lost_its_race_writes_no_event(alice, receiver):
    webhook_create(account=alice.account, url=receiver.url)
    message = MessageFactory(account=alice.account, link__node__account=alice.account)
    stale = MessageFactory._meta.model.objects.get(pk=message.pk)
    assert message_transition(message=message, to=Disposition.SENT)
    assert not message_transition(message=stale, to=Disposition.QUEUED)
    assert list(Event.objects.values_list("type", flat=True)) == ["email.sent"]
