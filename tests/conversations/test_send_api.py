"""`POST /rest/v1/email` with a proxy domain: a conversation opened and the first message sent
From the proxy address."""

from __future__ import annotations

import email
import email.policy

import pytest

from conversations.models import Conversation
from conversations.services import proxy_domain_add
from tests.factories import LinkFactory, NodeFactory
from tests.worker import deliver_due
from tracking.models import Message

pytestmark = pytest.mark.django_db


def send_body(**overrides) -> dict:
    return {
        "link_id": "abc123",
        "sender_address": "bob.bob@iovox.com",
        "sender_name": "Bob Bob",
        "recipient_address": "bob@example.net",
        "recipient_name": "Billy Bob",
        "proxy_domain": "example.com",
        "proxy_name": "Company Name",
        "subject": "This is an E-Mail",
        "text_content": "This is plain text",
        "html_content": "<html><body>This is HTML</body></html>",
    } | overrides


@pytest.fixture
def alice_link(alice):
    proxy_domain_add(domain="example.com")
    return LinkFactory(node=NodeFactory(account=alice.account), link_id="abc123")


def test_send_with_a_proxy_domain_opens_a_conversation(alice, alice_link, mail_servers):
    response = alice.client.post("/rest/v1/email", send_body(), format="json")
    assert response.status_code == 201, response.json()
    deliver_due()
    body = response.json()
    assert set(body) == {"message_id", "conversation_id", "proxy_address"}
    conversation = Conversation.objects.get(conversation_id=body["conversation_id"])
    assert conversation.proxy_address == body["proxy_address"]
    assert (conversation.party_a_address, conversation.party_a_name) == (
        "bob.bob@iovox.com",
        "Bob Bob",
    )
    assert (conversation.party_b_address, conversation.party_b_name) == (
        "bob@example.net",
        "Billy Bob",
    )
    message = Message.objects.get(message_id=body["message_id"])
    assert message.conversation_id == conversation.conversation_id
    assert (message.proxy_address, message.proxy_name) == (body["proxy_address"], "Company Name")

    [received] = mail_servers.mx.received
    sent = email.message_from_bytes(received.data, policy=email.policy.default)
    assert sent["From"] == f"Company Name <{body['proxy_address']}>"
    assert sent["To"] == "Billy Bob <bob@example.net>"


def test_without_a_proxy_name_the_sender_name_is_shown(alice, alice_link, mail_servers):
    response = alice.client.post("/rest/v1/email", send_body(proxy_name=""), format="json")
    assert response.status_code == 201
    deliver_due()
    sent = email.message_from_bytes(mail_servers.mx.received[0].data, policy=email.policy.default)
    assert sent["From"] == f"Bob Bob <{response.json()['proxy_address']}>"


def test_send_without_a_proxy_domain_answers_only_the_message_id(alice, alice_link):
    response = alice.client.post("/rest/v1/email", send_body(proxy_domain=""), format="json")
    assert response.status_code == 201
    assert set(response.json()) == {"message_id"}
    assert not Conversation.objects.exists()
    assert Message.objects.get().proxy_address == ""


def test_a_domain_not_configured_for_the_account_is_a_400(alice, bob, alice_link):
    proxy_domain_add(domain="bob-only.example", account=bob.account)
    for domain in ("bob-only.example", "unknown.example"):
        response = alice.client.post(
            "/rest/v1/email", send_body(proxy_domain=domain), format="json"
        )
        assert response.status_code == 400
        assert response.json() == {"errors": ["proxy_domain is not configured for your account"]}
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_other_errors_are_listed_beside_the_proxy_domain(alice, alice_link):
    response = alice.client.post(
        "/rest/v1/email",
        send_body(link_id="nope", proxy_domain="unknown.example", text_content=""),
        format="json",
    )
    assert response.status_code == 400
    assert sorted(response.json()["errors"]) == [
        "link_id does not exist",
        "proxy_domain is not configured for your account",
        "text_content cannot be empty",
    ]
