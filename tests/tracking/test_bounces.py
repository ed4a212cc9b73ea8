from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import MessageFactory
from tracking.delivery.verp import verp_address, verp_address_for, verp_message_id
from tracking.models import Disposition, TrackingEvent
from tracking.services.bounces import bounce_process

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def fixture(name: str, message) -> bytes:
    text = (FIXTURES / name).read_text()
    text = text.replace("{{VERP}}", verp_address(message))
    text = text.replace("{{RECIPIENT}}", message.recipient_address)
    return text.replace("\n", "\r\n").encode()


def test_a_postfix_dsn_marks_a_sent_message_bounced_with_the_diagnostic():
    message = MessageFactory(disposition=Disposition.SENT)
    result = bounce_process(raw=fixture("postfix_dsn.eml", message), rcpt_to=verp_address(message))
    assert result == message
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    assert "5.1.1" in message.status_detail
    assert "User unknown in virtual mailbox table" in message.status_detail
    assert message.recipient_address in message.status_detail
    assert message.events.get().kind == TrackingEvent.Kind.BOUNCE


def test_a_plain_text_bounce_is_understood():
    message = MessageFactory(disposition=Disposition.SENT)
    bounce_process(raw=fixture("plain_bounce.eml", message), rcpt_to=verp_address(message))
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    assert message.status_detail == "552 5.2.2 Mailbox full, quota exceeded"


def test_a_delay_report_changes_nothing():
    message = MessageFactory(disposition=Disposition.SENT)
    assert (
        bounce_process(raw=fixture("delayed_dsn.eml", message), rcpt_to=verp_address(message))
        == message
    )
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert not message.events.exists()


@pytest.mark.parametrize("disposition", [Disposition.QUEUED, Disposition.RECEIVED])
def test_a_bounce_for_a_message_not_sent_is_recorded_without_moving_it(disposition):
    message = MessageFactory(disposition=disposition)
    bounce_process(raw=fixture("postfix_dsn.eml", message), rcpt_to=verp_address(message))
    message.refresh_from_db()
    assert message.disposition == disposition
    assert message.events.get().kind == "bounce"


def test_a_second_bounce_is_recorded_and_the_message_stays_bounced():
    message = MessageFactory(disposition=Disposition.SENT)
    for _ in range(2):
        bounce_process(raw=fixture("postfix_dsn.eml", message), rcpt_to=verp_address(message))
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    assert message.events.count() == 2


def test_a_forged_verp_address_marks_nothing():
    message = MessageFactory(disposition=Disposition.SENT)
    genuine = verp_address(message)
    local, _, domain = genuine.partition("@")
    forged = local[:-1] + ("0" if local[-1] != "0" else "1") + "@" + domain
    assert bounce_process(raw=fixture("postfix_dsn.eml", message), rcpt_to=forged) is None
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert not TrackingEvent.objects.exists()


def test_verp_addresses_name_the_message_and_are_checked():
    message = MessageFactory()
    address = verp_address(message)
    assert address.startswith(f"b+{message.message_id.hex}.")
    assert address.endswith("@iovox.email")
    assert verp_message_id(address) == message.message_id
    assert verp_message_id(f"<{address.upper()}>") == message.message_id
    assert verp_message_id(address.replace("iovox.email", "evil.example")) is None
    assert verp_message_id("someone@iovox.email") is None
    assert verp_message_id("") is None


def test_a_verp_address_for_an_unknown_message_gives_none():
    import uuid

    stranger = verp_address_for(uuid.uuid4())
    assert bounce_process(raw=b"Subject: x\r\n\r\n550 no\r\n", rcpt_to=stranger) is None
