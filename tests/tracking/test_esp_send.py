"""Delivery through ESPs with django-anymail (DELIVERY_TRANSPORT=anymail): a local HTTP server
stands in for each ESP's send API at the URL anymail is given, records what anymail posts and
answers as that ESP does, success and error."""

from __future__ import annotations

import base64
import email
from email import policy

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tests.esp_servers import EspApi
from tests.factories import LinkFactory
from tests.portal.conftest import portal_client
from tests.worker import deliver_due
from tracking.models import Disposition, Message

pytestmark = pytest.mark.django_db

PATHS = {
    "mailgun": "/v3/brand.example/messages",
    "postmark": "/email",
    "sendgrid": "/v3/mail/send",
    "amazon_ses": "/v2/email/outbound-emails",
    "sparkpost": "/api/v1/transmissions/",
}
# What each ESP's answer to an accepted send makes of the message (anymail's status).
ACCEPTED_AS = {
    "mailgun": ("queued", Disposition.QUEUED),
    "postmark": ("sent", Disposition.SENT),
    "sendgrid": ("queued", Disposition.QUEUED),
    "amazon_ses": ("queued", Disposition.QUEUED),
    "sparkpost": ("queued", Disposition.QUEUED),
}


def esp_fixture(esp: str, settings):
    api = EspApi(esp).start()
    settings.DELIVERY_TRANSPORT = "anymail"
    settings.ANYMAIL_ESP = esp
    settings.ANYMAIL = api.anymail_settings()
    return api


@pytest.fixture(params=sorted(PATHS))
def esp_api(request, settings):
    api = esp_fixture(request.param, settings)
    yield api
    api.stop()


@pytest.fixture
def mailgun(settings):
    api = esp_fixture("mailgun", settings)
    yield api
    api.stop()


@pytest.fixture
def postmark(settings):
    api = esp_fixture("postmark", settings)
    yield api
    api.stop()


@pytest.fixture
def send(alice):
    LinkFactory(account=alice.account, node__account=alice.account, link_id="l1")

    def send(recipient: str = "bob@example.net") -> Message:
        body = {
            "link_id": "l1", "sender_address": "ann@brand.example", "sender_name": "Ann",
            "recipient_address": recipient, "recipient_name": "Bob",
            "subject": "Hello from the ESP", "text_content": "Plain text",
            "html_content": '<p>HTML with <a href="https://shop.example/">a link</a></p>',
            "attachments": [{
                "filename": "note.txt", "disposition": "attachment", "type": "text/plain",
                "body": base64.b64encode(b"attached words").decode(),
            }],
        }  # fmt: skip
        response = alice.client.post("/rest/v1/email", body, format="json")
        assert response.status_code == 201, response.json()
        deliver_due()
        return Message.objects.get(message_id=response.json()["message_id"])

    return send


def mailgun_fields(request) -> dict[str, str]:
    """The form fields of a multipart/form-data post (text fields only)."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    form = email.message_from_bytes(head + request.body, policy=policy.default)
    fields: dict[str, str] = {}
    for part in form.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename() is None:
            fields.setdefault(name, part.get_content())
    return fields


def lookup(headers: dict[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), "")


def posted(esp: str, request) -> dict[str, str]:
    """What the ESP got, in common terms: html, to, subject, tracking switches as sent."""
    if esp == "mailgun":
        f = mailgun_fields(request)
        return {"html": f["html"], "to": f["to"], "subject": f["subject"],
                "tracking": f"{f['o:tracking-opens']},{f['o:tracking-clicks']}",
                "header": lookup(f, "h:Message-ID")}  # fmt: skip
    data = request.json()
    if esp == "postmark":
        header = lookup({h["Name"]: h["Value"] for h in data["Headers"]}, "Message-ID")
        tracking = f"{data['TrackOpens']},{data['TrackLinks']}"
        return {"html": data["HtmlBody"], "to": data["To"], "subject": data["Subject"],
                "tracking": tracking, "header": header}  # fmt: skip
    if esp == "sendgrid":
        html = next(c["value"] for c in data["content"] if c["type"] == "text/html")
        tracking = data["tracking_settings"]
        return {"html": html, "to": data["personalizations"][0]["to"][0]["email"],
                "subject": data["subject"], "header": lookup(data["headers"], "Message-ID"),
                "tracking": f"{tracking['open_tracking']['enable']},"
                f"{tracking['click_tracking']['enable']}"}  # fmt: skip
    if esp == "sparkpost":
        content = data["content"]
        return {"html": content["html"], "to": data["recipients"][0]["address"]["email"],
                "subject": content["subject"], "header": lookup(content["headers"], "Message-ID"),
                "tracking": f"{data['options']['open_tracking']},"
                f"{data['options']['click_tracking']}"}  # fmt: skip
    raw = base64.b64decode(data["Content"]["Raw"]["Data"])
    mime = email.message_from_bytes(raw, policy=policy.default)
    html = mime.get_body(("html",)).get_content()
    return {"html": html, "to": data["Destination"]["ToAddresses"][0],
            "subject": str(mime["Subject"]), "header": str(mime["Message-ID"]),
            "tracking": "ses has none of its own"}  # fmt: skip


def test_api_mail_goes_out_through_the_esp_with_our_tracking_and_theirs_off(esp_api, send):
    esp = esp_api.esp
    message = send()
    [request] = esp_api.requests
    assert request.path == PATHS[esp]
    got = posted(esp, request)
    assert "bob@example.net" in got["to"] and got["subject"] == "Hello from the ESP"
    assert "/t/o/" in got["html"] and "/t/c/" in got["html"]  # our pixel, our click link
    assert "https://shop.example/" not in got["html"]
    assert got["header"] == message.smtp_message_id  # our headers go as they are
    assert got["tracking"] in {
        "no,no", "False,None", "False,False", "ses has none of its own"
    }  # fmt: skip
    status, disposition = ACCEPTED_AS[esp]
    assert message.disposition == disposition
    assert message.esp_message_id and message.esp_message_id in message.last_smtp_response
    assert message.last_smtp_response.startswith(f"{esp}: {status}")
    [attempt] = message.attempts.all()
    assert (attempt.mx_host, attempt.outcome, attempt.bounce_type) == (esp, disposition, "")
    assert deliver_due() == 0  # accepted: nothing of ours is due, the ESP's events move it on
    assert len(esp_api.requests) == 1


def test_the_attachment_goes_to_the_esp(postmark, send):
    send()
    [attachment] = postmark.requests[0].json()["Attachments"]
    assert attachment["Name"] == "note.txt"
    assert base64.b64decode(attachment["Content"]) == b"attached words"


def test_an_api_error_is_a_failed_attempt_retried_with_the_esp_status(mailgun, send):
    mailgun.error = (400, {"message": "'from' parameter is not a valid address. please check"})
    message = send()
    assert message.disposition == Disposition.QUEUED and message.next_attempt_at is not None
    assert "not a valid address" in message.last_smtp_response
    [attempt] = message.attempts.all()
    assert (attempt.mx_host, attempt.smtp_code, attempt.outcome) == ("mailgun", 400, "queued")
    assert message.esp_message_id == ""


def test_a_recipient_the_esp_rejects_is_undeliverable(postmark, send):
    postmark.error = (
        422,
        {"ErrorCode": 406, "Message": "You tried to send to a recipient that has been marked as "
         "inactive.\nFound inactive addresses: bob@example.net.\nInactive recipients are ones "
         "that have generated a hard bounce or a spam complaint."},
    )  # fmt: skip
    message = send()
    assert message.disposition == Disposition.UNDELIVERABLE
    assert message.last_smtp_response.startswith("postmark: rejected")


def test_an_unreachable_esp_leaves_the_message_queued(mailgun, send):
    mailgun.stop()
    message = send()
    assert message.disposition == Disposition.QUEUED and message.next_attempt_at is not None
    assert message.last_smtp_response.startswith("mailgun: failed")


@pytest.mark.parametrize(
    ("esp", "anymail", "error"),
    [
        ("pigeon", {}, "ANYMAIL_ESP must be one of"),
        ("mailgun", {}, "needs ANYMAIL_MAILGUN_API_KEY"),
        ("postmark", {"MAILGUN_API_KEY": "k"}, "needs ANYMAIL_POSTMARK_SERVER_TOKEN"),
    ],
)
def test_bad_esp_settings_fail_the_check_and_mail_stays_queued(settings, send, esp, anymail, error):
    settings.DELIVERY_TRANSPORT = "anymail"
    settings.ANYMAIL_ESP = esp
    settings.ANYMAIL = anymail
    with pytest.raises(SystemCheckError, match=error):
        call_command("check")
    message = send()
    assert message.disposition == Disposition.QUEUED
    assert error in message.last_smtp_response


def test_the_esp_message_id_is_shown_in_the_portal(alice, postmark, send):
    message = send()
    page = portal_client(alice.account, "alice-user").get(f"/messages/{message.message_id}")
    assert page.status_code == 200
    assert message.esp_message_id in page.content.decode()


def test_a_backend_that_cannot_open_leaves_the_messages_queued(settings, send):
    settings.DELIVERY_TRANSPORT = "anymail"
    settings.ANYMAIL_ESP = "amazon_ses"
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": "u:p",
        "AMAZON_SES_CLIENT_PARAMS": {"region_name": "no such region!"},
    }
    message = send()
    assert message.disposition == Disposition.QUEUED and message.next_attempt_at is not None
    assert message.last_smtp_response.startswith("amazon_ses: failed: Provided region_name")
