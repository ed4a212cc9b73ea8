"""Events of inbound mail through the real smtpd: a lead writing to a link alias is
`email.received`; a DSN for a sent message is `email.received_bounced` with its codes, and a
hard one suppresses the address."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conversations.conftest import eml
from tests.factories import ContactFactory, LinkFactory, MessageFactory, NodeFactory
from tests.worker import webhooks_send_due, work
from tracking.delivery.verp import verp_address
from tracking.models import Direction, Disposition, Suppression
from tracking.webhooks.services import webhook_create

ALIAS = "bobs-automotive_honda-civic@iovox.email"
LEAD = "customer@gmail.example"
BOUNCES = Path(__file__).resolve().parent.parent / "fixtures" / "mail" / "bounces"


@pytest.fixture(autouse=True)
def webhooks_to_loopback(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0


@pytest.fixture
def link(transactional_db):
    contact = ContactFactory(name="Sales desk", email="sales@example.net")
    return LinkFactory(
        node=NodeFactory(account=contact.account, node_name="Bobs automotive"),
        link_name="Honda Civic",
        email_address=ALIAS,
        destination=contact,
    )


@pytest.fixture
def live(inbound_server, mail_servers):
    return inbound_server


def test_a_lead_writing_to_an_alias_is_email_received(live, link, receiver):
    endpoint = webhook_create(account=link.account, url=receiver.url, events=["email.received"])
    live.send(eml("gmail_reply.eml", sender=LEAD, to=ALIAS), mail_from=LEAD, to=ALIAS)
    work()
    webhooks_send_due()
    (received,) = receiver.verified(endpoint.secret)
    assert received["type"] == "email.received"
    data = received["data"]
    assert data["sender_address"] == LEAD and data["link_id"] == link.link_id
    assert data["recipient_address"] == "sales@example.net"
    assert data["subject"] == "Re: Your test drive"


def test_a_hard_dsn_through_smtpd_bounces_and_suppresses(live, link, receiver):
    endpoint = webhook_create(
        account=link.account, url=receiver.url, events=["email.received_bounced"]
    )
    message = MessageFactory(
        account=link.account,
        link=link,
        recipient_address="gone@example.net",
        disposition=Disposition.SENT,
        direction=Direction.API,
    )
    raw = (BOUNCES / "gmail_no_such_user.eml").read_text()
    raw = raw.replace("{{VERP}}", verp_address(message)).replace(
        "{{RECIPIENT}}", "gone@example.net"
    )
    live.send(raw.replace("\n", "\r\n").encode(), mail_from="", to=verp_address(message))
    work()
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    suppression = Suppression.objects.get(account=link.account)
    assert (suppression.email_address, suppression.reason, suppression.enhanced_code) == (
        "gone@example.net",
        "hard_bounce",
        "5.1.1",
    )
    webhooks_send_due()
    (bounced,) = receiver.verified(endpoint.secret)
    assert bounced["type"] == "email.received_bounced"
    assert bounced["data"]["bounce_type"] == "hard"
    assert bounced["data"]["smtp_code"] == 550
    assert bounced["data"]["enhanced_code"] == "5.1.1"


def test_a_soft_dsn_never_suppresses(live, link):
    message = MessageFactory(
        account=link.account,
        link=link,
        recipient_address="full@example.net",
        disposition=Disposition.SENT,
    )
    raw = (BOUNCES / "gmail_over_quota.eml").read_text()
    raw = raw.replace("{{VERP}}", verp_address(message)).replace(
        "{{RECIPIENT}}", "full@example.net"
    )
    live.send(raw.replace("\n", "\r\n").encode(), mail_from="", to=verp_address(message))
    work()
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    assert message.attempts.get().bounce_type == "soft"
    assert not Suppression.objects.exists()
