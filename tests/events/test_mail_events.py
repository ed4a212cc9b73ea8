"""Events from the mail pipeline, end to end: a send through the API, delivery to a real
aiosmtpd MX (answering 250, 550 or 452), opens and clicks on the real tracking URLs, and the
webhook posts each produces, verified with the standardwebhooks package."""

from __future__ import annotations

import pytest

from tests.factories import LinkFactory, NodeFactory
from tests.worker import deliver_due, webhooks_send_due
from tracking.engagement import tokens
from tracking.models import DeliveryAttempt, Message, Suppression
from tracking.webhooks.services import webhook_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def tracking_urls(settings):
    settings.TRACKING_BASE_URL = "http://testserver"


@pytest.fixture
def link(alice):
    node = NodeFactory(account=alice.account, node_id="n1", node_name="Dealer")
    return LinkFactory(node=node, link_id="l1", link_name="Civic")


def send(actor, link, recipient="ann@example.net") -> Message:
    response = actor.client.post(
        "/rest/v1/email",
        {
            "link_id": link.link_id,
            "sender_address": "bob@sender.example",
            "sender_name": "Bob",
            "recipient_address": recipient,
            "recipient_name": "Ann",
            "subject": "Hello",
            "text_content": "Hi",
            "html_content": "<p>Hi <a href='https://example.org/car'>car</a></p>",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return Message.objects.get(message_id=response.json()["message_id"])


def deliver_all() -> None:
    """The delivery work the worker's loop would do now."""
    deliver_due()


def posted(receiver, endpoint) -> list[dict]:
    webhooks_send_due()
    return receiver.verified(endpoint.secret)


def test_a_send_tells_received_then_sent(alice, link, mail_servers, receiver):
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    message = send(alice, link)
    deliver_all()
    received, sent = posted(receiver, endpoint)
    assert received["type"] == "email.received" and received["data"]["disposition"] == "received"
    assert sent["type"] == "email.sent"
    data = sent["data"]
    assert data["message_id"] == str(message.message_id)
    assert (
        data["disposition"] == "sent" and data["link_id"] == "l1" and data["node_name"] == "Dealer"
    )
    assert data["smtp_code"] == 250 and "OK" in data["smtp_text"]
    assert "bounce_type" not in data
    assert received["created_date"] <= sent["created_date"]


def test_a_550_is_a_hard_bounce_that_suppresses_the_next_send(alice, link, mail_servers, receiver):
    endpoint = webhook_create(
        account=alice.account,
        url=receiver.url,
        events=["email.undeliverable", "email.suppressed"],
    )
    mail_servers.mx.reply_to_rcpt["gone@example.net"] = "550 5.1.1 <gone@example.net>: No such user"
    first = send(alice, link, "gone@example.net")
    deliver_all()
    first.refresh_from_db()
    assert first.disposition == "undeliverable"
    attempt = DeliveryAttempt.objects.get(message=first)
    assert (attempt.smtp_code, attempt.enhanced_code, attempt.bounce_type) == (550, "5.1.1", "hard")
    suppression = Suppression.objects.get(account=alice.account, email_address="gone@example.net")
    assert suppression.reason == "hard_bounce" and suppression.smtp_code == 550
    assert "No such user" in suppression.smtp_text and suppression.message == first

    rcpts_before = len(mail_servers.mx.rcpt_seen)
    second = send(alice, link, "Gone@example.net")  # accepted: one code path for clients
    deliver_all()
    second.refresh_from_db()
    assert second.disposition == "undeliverable"
    assert second.status_detail.startswith("suppressed: gone@example.net is on the suppression")
    assert "hard bounce, 550 5.1.1" in second.status_detail
    assert len(mail_servers.mx.rcpt_seen) == rcpts_before  # never attempted
    assert not DeliveryAttempt.objects.filter(message=second).exists()

    undeliverable, suppressed = posted(receiver, endpoint)
    assert undeliverable["type"] == "email.undeliverable"
    assert undeliverable["data"]["bounce_type"] == "hard"
    assert undeliverable["data"]["enhanced_code"] == "5.1.1"
    assert undeliverable["data"]["smtp_code"] == 550
    assert suppressed["type"] == "email.suppressed"
    assert suppressed["data"]["message_id"] == str(second.message_id)
    assert suppressed["data"]["disposition"] == "undeliverable"
    assert suppressed["data"]["suppression_reason"] == "hard_bounce"

    # Removing the address lets the next send through.
    assert alice.client.delete("/rest/v1/suppressions/gone@example.net").status_code == 204
    del mail_servers.mx.reply_to_rcpt["gone@example.net"]
    third = send(alice, link, "gone@example.net")
    deliver_all()
    third.refresh_from_db()
    assert third.disposition == "sent"


def test_a_4xx_is_soft_and_never_suppresses(alice, link, mail_servers, receiver):
    endpoint = webhook_create(account=alice.account, url=receiver.url, events=["email.queued"])
    mail_servers.mx.reply_to_rcpt["full@example.net"] = "452 4.2.2 Mailbox full"
    send(alice, link, "full@example.net")
    deliver_all()
    (queued,) = posted(receiver, endpoint)
    assert queued["data"]["disposition"] == "queued"
    assert queued["data"]["bounce_type"] == "soft"
    assert not Suppression.objects.exists()


def test_a_suppressed_address_of_another_account_is_sent(alice, bob, link, mail_servers):
    bob.client.post("/rest/v1/suppressions", {"email_address": "ann@example.net"}, format="json")
    message = send(alice, link)
    deliver_all()
    message.refresh_from_db()
    assert message.disposition == "sent"


def test_opens_and_clicks_are_told_with_the_hit(alice, link, mail_servers, receiver, client):
    endpoint = webhook_create(
        account=alice.account, url=receiver.url, events=["email.opened", "email.clicked"]
    )
    message = send(alice, link)
    deliver_all()
    pixel = tokens.open_url(message.message_id).removeprefix("http://testserver")
    click = tokens.click_url(message.message_id, "https://example.org/car").removeprefix(
        "http://testserver"
    )
    assert client.get(pixel, HTTP_USER_AGENT="Mozilla/5.0 (Macintosh)").status_code == 200
    assert client.get(click, HTTP_USER_AGENT="Mozilla/5.0 (Macintosh)").status_code == 302
    opened, clicked = posted(receiver, endpoint)
    assert opened["type"] == "email.opened"
    assert opened["data"]["read_disposition"] == "read"
    assert opened["data"]["event"]["automated"] in (True, False)
    assert "occurred_date" in opened["data"]["event"]
    assert opened["data"]["event"]["user_agent"] == "Mozilla/5.0 (Macintosh)"
    assert clicked["type"] == "email.clicked"
    assert clicked["data"]["event"]["url"] == "https://example.org/car"
    assert (
        "automated_reason" in clicked["data"]["event"] or not clicked["data"]["event"]["automated"]
    )
