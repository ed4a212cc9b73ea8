"""Bounce classification: real bounce formats (Gmail, Outlook/Exchange, Postfix, Exim, qmail)
read into their codes and `bounce_type`; hard ones suppress the address, soft never."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import compat32
from pathlib import Path

import pytest

from tests.factories import MessageFactory
from tracking.bounces import bounce_classify
from tracking.delivery.verp import verp_address
from tracking.models import DeliveryAttempt, Disposition, Suppression
from tracking.services.bounces import bounce_process, bounce_read

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mail"


def fixture(name: str, message) -> bytes:
    text = (FIXTURES / name).read_text()
    text = text.replace("{{VERP}}", verp_address(message))
    text = text.replace("{{RECIPIENT}}", message.recipient_address)
    return text.replace("\n", "\r\n").encode()


@pytest.mark.parametrize(
    ("name", "smtp_code", "enhanced_code", "bounce_type"),
    [
        ("bounces/gmail_no_such_user.eml", 550, "5.1.1", "hard"),
        ("bounces/gmail_over_quota.eml", 552, "5.2.2", "soft"),
        ("bounces/outlook_recipient_not_found.eml", 550, "5.1.10", "hard"),
        ("bounces/exchange_blocked.eml", 550, "5.7.1", "block"),
        ("bounces/exim_no_such_user.eml", 550, "5.1.1", "hard"),
        ("bounces/qmail_no_mailbox.eml", None, "5.1.1", "hard"),
        ("postfix_dsn.eml", 550, "5.1.1", "hard"),
        ("plain_bounce.eml", 552, "5.2.2", "soft"),
    ],
)
def test_a_real_bounce_is_recorded_with_its_codes_and_type(
    name, smtp_code, enhanced_code, bounce_type
):
    message = MessageFactory(disposition=Disposition.SENT)
    bounce_process(raw=fixture(name, message), rcpt_to=verp_address(message))
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    report = DeliveryAttempt.objects.get(message=message)
    assert report.outcome == Disposition.RECEIVED_BOUNCED
    assert (report.smtp_code, report.enhanced_code, report.bounce_type) == (
        smtp_code,
        enhanced_code,
        bounce_type,
    )
    suppressed = Suppression.objects.filter(
        account=message.account, email_address=message.recipient_address
    ).first()
    if bounce_type == "hard":
        assert suppressed.reason == "hard_bounce"
        assert suppressed.enhanced_code == enhanced_code and suppressed.message == message
        assert suppressed.smtp_text
    else:
        assert suppressed is None


@pytest.mark.parametrize("name", ["bounces/exim_no_such_user.eml", "bounces/qmail_no_mailbox.eml"])
def test_flufl_bounce_recognises_the_non_standard_formats_as_permanent(name):
    message = MessageFactory.build(recipient_address="gone@example.net", pk=1)
    report = bounce_read(
        message_from_bytes(fixture(name, message), policy=compat32), "gone@example.net"
    )
    assert report.failed and report.permanent is True


def test_the_bounce_shows_in_the_api_attempts(alice):
    message = MessageFactory(
        account=alice.account, link__node__account=alice.account, disposition=Disposition.SENT
    )
    bounce_process(
        raw=fixture("bounces/gmail_no_such_user.eml", message), rcpt_to=verp_address(message)
    )
    detail = alice.client.get(f"/rest/v1/email/{message.message_id}").json()
    (attempt,) = detail["attempts"]
    assert attempt["outcome"] == "received_bounced"
    assert attempt["smtp_code"] == 550 and attempt["enhanced_code"] == "5.1.1"
    assert attempt["bounce_type"] == "hard"
    assert attempt["mx_host"] == "googlemail.com"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((550, "5.1.1 The email account that you tried to reach does not exist"), "hard"),
        ((550, "Requested action not taken: mailbox unavailable"), "hard"),
        ((550, "5.0.0 <x@example.net>... User unknown"), "hard"),
        ((553, "sorry, that domain isn't in my list of allowed rcpthosts"), "hard"),
        ((452, "4.2.2 The email account that you tried to reach is over quota"), "soft"),
        ((552, "5.2.2 Mailbox full"), "soft"),
        (
            (550, "5.7.26 Unauthenticated email is not accepted due to the domain's DMARC policy"),
            "block",
        ),
        ((554, "5.7.1 Message rejected as spam"), "block"),
        ((554, "Transaction failed"), "block"),
        ((421, "4.7.0 Try again later, closing connection"), "soft"),
        ((None, "Connection refused"), "soft"),
        ((500, "5.5.1 Unrecognized command"), "soft"),
    ],
)
def test_the_classifier(reply, expected):
    assert bounce_classify(smtp_code=reply[0], text=reply[1]).bounce_type == expected
