from __future__ import annotations

import pytest

from tests.factories import MessageFactory
from tracking.delivery.state import (
    InvalidTransition,
    Transition,
    message_transition,
    messages_transition,
)
from tracking.models import Disposition, Message
from tracking.services.messages import message_refuse

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "start, to",
    [
        (Disposition.RECEIVED, Disposition.EXPIRED),
        (Disposition.RECEIVED, Disposition.RECEIVED_BOUNCED),
        (Disposition.QUEUED, Disposition.NO_RULES),
        (Disposition.SENT, Disposition.QUEUED),
        (Disposition.UNDELIVERABLE, Disposition.SENT),
        (Disposition.EXPIRED, Disposition.QUEUED),
        (Disposition.RECEIVED_BOUNCED, Disposition.SENT),
    ],
)
def test_moves_outside_the_design_are_refused(start, to):
    message = MessageFactory(disposition=start)
    with pytest.raises(InvalidTransition):
        message_transition(message=message, to=to)
    message.refresh_from_db()
    assert message.disposition == start


def test_a_transition_from_a_stale_read_changes_nothing():
    message = MessageFactory()
    stale = Message.objects.get(pk=message.pk)
    assert message_transition(message=message, to=Disposition.QUEUED)
    assert message_transition(message=stale, to=Disposition.SENT) is False
    message.refresh_from_db()
    assert message.disposition == Disposition.QUEUED and message.state_version == 1


def test_only_known_fields_can_be_set_with_a_transition():
    with pytest.raises(TypeError):
        message_transition(message=MessageFactory(), to=Disposition.SENT, subject="x")


def test_a_batch_moves_each_message_that_is_still_as_read():
    first, second, third = MessageFactory(), MessageFactory(), MessageFactory()
    Message.objects.filter(pk=second.pk).update(state_version=5)  # someone else moved it
    made = messages_transition(
        [
            Transition(first, Disposition.SENT, {"last_smtp_response": "250 a"}),
            Transition(second, Disposition.SENT, {"last_smtp_response": "250 b"}),
            Transition(third, Disposition.UNDELIVERABLE, {"last_smtp_response": "550 c"}),
        ]
    )
    assert made == [True, False, True]
    rows = dict(Message.objects.values_list("pk", "last_smtp_response"))
    assert rows == {first.pk: "250 a", second.pk: "", third.pk: "550 c"}
    assert Message.objects.get(pk=third.pk).disposition == Disposition.UNDELIVERABLE


@pytest.mark.parametrize("disposition", [Disposition.NO_RULES, Disposition.RULE_ERROR])
def test_alias_mail_without_a_destination_is_refused_with_the_reason(disposition):
    message = MessageFactory(direction="alias")
    message_refuse(message=message, disposition=disposition, detail="link has no destination")
    message.refresh_from_db()
    assert message.disposition == disposition
    assert message.status_detail == "link has no destination"


def test_refusing_is_only_for_received_messages_and_refusal_dispositions():
    with pytest.raises(ValueError):
        message_refuse(message=MessageFactory(), disposition=Disposition.SENT, detail="")
    with pytest.raises(InvalidTransition):
        message_refuse(
            message=MessageFactory(disposition=Disposition.SENT),
            disposition=Disposition.NO_RULES,
            detail="",
        )
