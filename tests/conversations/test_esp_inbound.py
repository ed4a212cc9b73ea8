"""Inbound mail posted by ESPs to /anymail/<esp>/inbound/ (Mailgun's raw MIME form, signed;
Postmark's JSON with its RawEmail, basic auth), payloads of the shape their documentation and
anymail's tests give: stored as smtpd stores mail, then routed and delivered by the worker's
turns to the link's contact (the MX sink)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from conversations.models import InboundMessage
from tests.conversations.conftest import ALIAS, CUSTOMER, eml
from tests.esp_servers import MAILGUN_KEY, WEBHOOK_SECRET
from tests.factories import ContactFactory, LinkFactory, NodeFactory
from tests.worker import work
from tracking.models import Direction, Disposition, EspWebhookRefusal, Message

pytestmark = pytest.mark.django_db

AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()}


@pytest.fixture(autouse=True)
def anymail(settings):
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
    }


@pytest.fixture
def link(db):
    contact = ContactFactory(name="Sales desk", email="sales@example.net")
    return LinkFactory(
        node=NodeFactory(account=contact.account, node_name="Bobs automotive"),
        link_name="Honda Civic",
        email_address=ALIAS,
        destination=contact,
    )


def mailgun_form(raw: bytes, *, recipient: str, sender: str, key: str = MAILGUN_KEY) -> dict:
    """Mailgun's inbound (store-and-notify / forward) post of the raw message, signed."""
    timestamp, token = "1461261330", "06c96bafc3f42a66b9edd546347a2fe18dc23461fe80dc52f0"
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {
        "recipient": recipient, "sender": sender, "body-mime": raw.decode(),
        "timestamp": timestamp, "token": token, "signature": signature,
    }  # fmt: skip


def postmark_json(raw: bytes, *, recipient: str) -> dict:
    """Postmark's inbound JSON with "Include raw email content" on (its RawEmail uses \\n)."""
    return {
        "RawEmail": raw.decode().replace("\r\n", "\n"),
        "OriginalRecipient": recipient,
        "MessageID": "22c74902-a0c1-4511-804f2-341342852c90",
        "StrippedTextReply": "",
        "Tag": "",
        "Headers": [{"Name": "Return-Path", "Value": f"<{CUSTOMER}>"}],
        "Attachments": [],
    }


def assert_forwarded_to_the_contact(mail_servers, *, peer: str, raw: bytes) -> Message:
    inbound = InboundMessage.objects.get()
    assert (inbound.peer, inbound.mail_from, inbound.rcpt_to) == (peer, CUSTOMER, [ALIAS])
    assert bytes(inbound.raw).endswith(raw)  # as it came, under our Received line
    work()
    inbound.refresh_from_db()
    assert inbound.status == InboundMessage.Status.ROUTED
    message = Message.objects.get()
    assert message.direction == Direction.ALIAS
    assert (message.sender_address, message.recipient_address) == (CUSTOMER, "sales@example.net")
    assert message.subject == "Re: Your test drive"
    assert message.disposition == Disposition.SENT
    [received] = mail_servers.mx.received
    assert received.rcpt_tos == ["sales@example.net"]
    assert b"Great, see you Thursday" in received.data
    return message


def test_mailgun_inbound_reaches_the_links_contact(client, link, mail_servers):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    form = mailgun_form(raw, recipient=ALIAS, sender=CUSTOMER)
    response = client.post("/anymail/mailgun/inbound_mime/", form, **AUTH)
    assert response.status_code == 200
    assert_forwarded_to_the_contact(mail_servers, peer="esp:mailgun", raw=raw)


def test_postmark_inbound_reaches_the_links_contact(client, link, mail_servers):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    body = postmark_json(raw, recipient=ALIAS)
    body["Headers"][0]["Value"] = f"<{CUSTOMER}>"
    response = client.post(
        "/anymail/postmark/inbound/", json.dumps(body), content_type="application/json", **AUTH
    )
    assert response.status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.peer == "esp:postmark" and inbound.rcpt_to == [ALIAS]
    assert bytes(inbound.raw).endswith(raw)  # its LF line endings made CRLF again
    work()
    message = Message.objects.get()
    assert (message.recipient_address, message.disposition) == ("sales@example.net", "sent")
    assert mail_servers.mx.recipients() == ["sales@example.net"]


def test_a_forged_mailgun_inbound_post_is_refused_and_stores_nothing(client, link):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    form = mailgun_form(raw, recipient=ALIAS, sender=CUSTOMER, key="not-the-key")
    assert client.post("/anymail/mailgun/inbound_mime/", form, **AUTH).status_code == 400
    assert not InboundMessage.objects.exists()
    assert EspWebhookRefusal.objects.get(esp="mailgun").reason == "bad_signature"


def test_a_postmark_inbound_post_without_basic_auth_is_refused(client, link):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    body = json.dumps(postmark_json(raw, recipient=ALIAS))
    response = client.post("/anymail/postmark/inbound/", body, content_type="application/json")
    assert response.status_code == 400
    assert not InboundMessage.objects.exists()


def test_mail_for_an_address_not_ours_is_counted_and_not_stored(client, link):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to="nobody@iovox.email")
    form = mailgun_form(raw, recipient="nobody@iovox.email", sender=CUSTOMER)
    assert client.post("/anymail/mailgun/inbound_mime/", form, **AUTH).status_code == 200
    assert not InboundMessage.objects.exists()
    assert EspWebhookRefusal.objects.get(esp="mailgun").reason == "unknown_recipient"


def test_a_mail_loop_is_stored_refused_as_smtpd_would(client, link):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    raw = b"".join(b"Received: by hop%d.example\r\n" % i for i in range(40)) + raw
    form = mailgun_form(raw, recipient=ALIAS, sender=CUSTOMER)
    assert client.post("/anymail/mailgun/inbound_mime/", form, **AUTH).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.status == InboundMessage.Status.REFUSED
    assert "mail loop" in inbound.error


def test_over_the_per_client_limit_the_esp_is_asked_to_retry(client, link, settings):
    settings.SMTPD_MESSAGES_PER_CLIENT_PER_MINUTE = 1
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    form = mailgun_form(raw, recipient=ALIAS, sender=CUSTOMER)
    assert client.post("/anymail/mailgun/inbound_mime/", form, **AUTH).status_code == 200
    assert client.post("/anymail/mailgun/inbound_mime/", form, **AUTH).status_code == 503
    assert InboundMessage.objects.count() == 1


def test_sendgrid_inbound_parse_with_the_raw_message_reaches_the_links_contact(
    client, link, mail_servers
):
    raw = eml("gmail_reply.eml", sender=CUSTOMER, to=ALIAS)
    form = {
        "email": raw.decode(), "from": f"Bob Bob <{CUSTOMER}>", "to": ALIAS,
        "subject": "Re: Your test drive",
        "charsets": '{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}',
        "envelope": json.dumps({"to": [ALIAS], "from": CUSTOMER}),
        "sender_ip": "10.10.1.71", "dkim": "{@gmail.example : pass}", "SPF": "pass",
        "spam_score": "0.1",
    }  # fmt: skip
    response = client.post("/anymail/sendgrid/inbound/", form, **AUTH)
    assert response.status_code == 200
    assert_forwarded_to_the_contact(mail_servers, peer="esp:sendgrid", raw=raw)
