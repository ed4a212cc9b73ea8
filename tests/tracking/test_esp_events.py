"""ESP tracking webhooks (/anymail/<esp>/tracking/) posted to our endpoints with the ESPs'
documented payloads (as in anymail's own tests), with valid and forged signatures and basic
auth: each moves the message it names as docs/transports.md says; what is refused is counted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from tests.esp_servers import MAILGUN_KEY, WEBHOOK_SECRET, EspApi
from tests.factories import LinkFactory
from tests.portal.conftest import portal_client
from tests.worker import deliver_due
from tracking.esp_webhooks import urlpatterns as esp_routes
from tracking.models import (
    DeliveryAttempt,
    Disposition,
    EspWebhookRefusal,
    Event,
    Message,
    Suppression,
    TrackingEvent,
    WebhookEndpoint,
)

pytestmark = pytest.mark.django_db

AUTH = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(WEBHOOK_SECRET.encode()).decode()}


def start_esp(esp: str, settings) -> EspApi:
    api = EspApi(esp).start()
    settings.DELIVERY_TRANSPORT = "anymail"
    settings.ANYMAIL_ESP = esp
    settings.ANYMAIL = api.anymail_settings()
    return api


@pytest.fixture
def sent_by(alice, settings):
    """sent_by(esp): a message sent through the ESP's stand-in, as the API and worker do."""
    LinkFactory(account=alice.account, node__account=alice.account, link_id="l1")
    apis: list[EspApi] = []

    def sent_by(esp: str) -> Message:
        apis.append(start_esp(esp, settings))
        body = {
            "link_id": "l1", "sender_address": "ann@brand.example", "sender_name": "Ann",
            "recipient_address": "bob@example.net", "recipient_name": "Bob", "subject": "Hi",
            "text_content": "Plain", "html_content": "<p>HTML</p>",
        }  # fmt: skip
        response = alice.client.post("/rest/v1/email", body, format="json")
        assert response.status_code == 201
        deliver_due()
        return Message.objects.get(message_id=response.json()["message_id"])

    yield sent_by
    for api in apis:
        api.stop()


def mailgun_signed(
    event_data: dict, *, token: str = "651869375b9df3c98fc15c4889b102119add"
) -> dict:
    """A Mailgun webhook body signed as Mailgun signs: HMAC-SHA256 of timestamp and token."""
    timestamp = "1534108637"
    signature = hmac.new(
        MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event_data,
    }


def mailgun_event(message: Message, event: str, **fields) -> dict:
    """A Mailgun event-data of the documented shape (anymail's test fixtures)."""
    return {
        "event": event,
        "id": "hTWCTD81RtiDN-fGAYmHqA",
        "timestamp": 1534108637.153125,
        "recipient": message.recipient_address,
        "message": {"headers": {"message-id": message.esp_message_id, "to": "bob@example.net"}},
        **fields,
    }


def post(client, esp: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        f"/anymail/{esp}/tracking/", data=data, content_type="application/json", **extra
    )


def refusals(esp: str) -> dict[str, int]:
    return dict(EspWebhookRefusal.objects.filter(esp=esp).values_list("reason", "count"))


# --- Mailgun: the message it queued moves on -----------------------------------------------


def test_mailgun_delivered_makes_the_queued_message_sent(client, sent_by):
    message = sent_by("mailgun")
    assert message.disposition == Disposition.QUEUED
    event = mailgun_event(
        message, "delivered", **{"delivery-status": {"code": 250, "message": "OK", "tls": True}}
    )
    response = post(client, "mailgun", mailgun_signed(event), **AUTH)
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert message.delivery_date == datetime(2018, 8, 12, 21, 17, 17, 153125, tzinfo=UTC)
    assert [a.outcome for a in message.attempts.all()] == ["queued", "sent"]
    assert refusals("mailgun") == {}


def test_mailgun_permanent_failure_makes_it_undeliverable_and_suppresses(client, sent_by):
    message = sent_by("mailgun")
    event = mailgun_event(
        message,
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist.",
            }
        },
    )
    assert post(client, "mailgun", mailgun_signed(event), **AUTH).status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.UNDELIVERABLE
    attempt = message.attempts.last()
    assert (attempt.enhanced_code, attempt.bounce_type) == ("5.1.1", "hard")
    assert Suppression.objects.get(email_address="bob@example.net").reason == "hard_bounce"
    assert TrackingEvent.objects.get(message=message).source == "esp"


def test_mailgun_temporary_failure_keeps_it_queued_for_the_esp(client, sent_by):
    message = sent_by("mailgun")
    event = mailgun_event(
        message,
        "failed",
        severity="temporary",
        reason="generic",
        **{"delivery-status": {"code": 452, "message": "4.2.2 Mailbox full"}},
    )
    assert post(client, "mailgun", mailgun_signed(event), **AUTH).status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.QUEUED and message.next_attempt_at is None
    assert "Mailbox full" in message.last_smtp_response
    assert deliver_due() == 0  # the ESP retries, not we


def test_a_forged_mailgun_signature_is_refused_and_counted(client, sent_by):
    message = sent_by("mailgun")
    body = mailgun_signed(mailgun_event(message, "delivered"))
    body["signature"]["signature"] = "0" * 64
    assert post(client, "mailgun", body, **AUTH).status_code == 400
    message.refresh_from_db()
    assert message.disposition == Disposition.QUEUED
    assert refusals("mailgun") == {"bad_signature": 1}


def test_a_post_without_our_basic_auth_is_refused_and_counted(client, sent_by):
    message = sent_by("mailgun")
    body = mailgun_signed(mailgun_event(message, "delivered"))
    assert post(client, "mailgun", body).status_code == 400
    wrong = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(b"esp-user:guess").decode()}
    assert post(client, "mailgun", body, **wrong).status_code == 400
    assert refusals("mailgun") == {"bad_signature": 2}
    message.refresh_from_db()
    assert message.disposition == Disposition.QUEUED


def test_a_replayed_event_changes_nothing_more_and_is_counted(client, sent_by):
    message = sent_by("mailgun")
    body = mailgun_signed(mailgun_event(message, "opened", **{"client-info": {"user-agent": "UA"}}))
    assert post(client, "mailgun", body, **AUTH).status_code == 200
    assert post(client, "mailgun", body, **AUTH).status_code == 200  # the ESP must not retry
    assert refusals("mailgun") == {"replay": 1}
    message.refresh_from_db()
    assert message.open_count == 1


def test_an_event_for_an_unknown_message_is_counted(client, sent_by):
    message = sent_by("mailgun")
    message.esp_message_id = "20990101000000.1.NOTOURS@mg.example"
    body = mailgun_signed(mailgun_event(message, "delivered"))
    assert post(client, "mailgun", body, **AUTH).status_code == 200
    assert refusals("mailgun") == {"unknown_message": 1}


def test_a_body_anymail_cannot_read_is_a_400_not_a_500(client, sent_by):
    sent_by("mailgun")
    assert post(client, "mailgun", "{not json", **AUTH).status_code == 400
    body = mailgun_signed({"event": "delivered", "timestamp": "not a time"})
    assert post(client, "mailgun", body, **AUTH).status_code == 400
    # Unreadable JSON fails its signature check first; a bad field, the parser.
    assert refusals("mailgun") == {"bad_signature": 1, "malformed": 1}


def test_webhooks_are_refused_without_a_webhook_secret(client, sent_by, settings):
    message = sent_by("postmark")
    settings.ANYMAIL = {k: v for k, v in settings.ANYMAIL.items() if k != "WEBHOOK_SECRET"}
    body = {"RecordType": "Delivery", "MessageID": message.esp_message_id, "Recipient": "x"}
    assert post(client, "postmark", body).status_code == 403
    assert refusals("postmark") == {"not_configured": 1}


# --- Postmark: the message it sent bounces, is complained of, opened, clicked ----------------


def postmark_bounce(message: Message) -> dict:
    return {
        "RecordType": "Bounce", "ID": 901542550, "Type": "HardBounce", "TypeCode": 1,
        "ServerID": 23, "Name": "Hard bounce", "MessageID": message.esp_message_id,
        "Description": "The server was unable to deliver your message (ex: unknown user, "
        "mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": message.recipient_address, "From": "ann@brand.example",
        "BouncedAt": "2026-12-05T16:28:50.3963933-04:00", "DumpAvailable": True,
        "Inactive": True, "CanActivate": True, "Subject": "Hi", "Content": "...",
    }  # fmt: skip


def test_postmark_bounce_of_a_sent_message_makes_it_received_bounced(client, sent_by):
    message = sent_by("postmark")
    assert message.disposition == Disposition.SENT
    assert post(client, "postmark", postmark_bounce(message), **AUTH).status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    attempt = message.attempts.last()
    assert (attempt.smtp_code, attempt.bounce_type, attempt.mx_host) == (550, "hard", "postmark")
    assert message.bounce_count == 1
    assert Suppression.objects.filter(email_address="bob@example.net").exists()


def test_postmark_spam_complaint_suppresses_and_emits_email_complained(alice, client, sent_by):
    WebhookEndpoint.objects.create(
        account=alice.account, url="https://hooks.example/", secret="whsec_x"
    )
    message = sent_by("postmark")
    body = {
        "RecordType": "SpamComplaint", "ID": 901542551, "Type": "SpamComplaint",
        "TypeCode": 512, "Name": "Spam complaint", "MessageID": message.esp_message_id,
        "ServerID": 1234, "Description": "", "Details": "Test spam complaint details",
        "Email": message.recipient_address, "From": "ann@brand.example",
        "BouncedAt": "2026-12-05T16:28:50.3963933-04:00", "DumpAvailable": True,
        "Inactive": True, "CanActivate": False, "Subject": "Hi",
    }  # fmt: skip
    assert post(client, "postmark", body, **AUTH).status_code == 200
    assert Suppression.objects.get(email_address="bob@example.net").reason == "complaint"
    event = Event.objects.get(type="email.complained")
    assert event.data["message_id"] == str(message.message_id)
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT  # delivered; the complaint came after


def test_postmark_open_and_click_are_events_marked_as_the_esps(client, sent_by):
    message = sent_by("postmark")
    opened = {
        "RecordType": "Open", "FirstOpen": True, "Platform": "Unknown",
        "UserAgent": "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0",
        "ReadSeconds": 0, "Geo": {}, "MessageID": message.esp_message_id,
        "ReceivedAt": "2026-12-05T16:21:41.2493688-04:00", "Recipient": "bob@example.net",
    }  # fmt: skip
    clicked = {
        "RecordType": "Click", "ClickLocation": "HTML", "Platform": "Desktop",
        "UserAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_5) etc.",
        "OriginalLink": "https://example.com/click/me", "Geo": {"IP": "8.8.8.8"},
        "MessageID": message.esp_message_id, "ReceivedAt": "2026-12-05T21:21:11.9065619Z",
        "Recipient": "bob@example.net",
    }  # fmt: skip
    assert post(client, "postmark", opened, **AUTH).status_code == 200
    assert post(client, "postmark", clicked, **AUTH).status_code == 200
    events = list(TrackingEvent.objects.filter(message=message).order_by("occurred_at"))
    assert [(e.kind, e.source) for e in events] == [("open", "esp"), ("click", "esp")]
    assert events[1].url == "https://example.com/click/me"
    message.refresh_from_db()
    assert (message.read_disposition, message.open_count, message.click_count) == ("read", 1, 1)
    page = portal_client(message.account, "alice-user").get(f"/messages/{message.message_id}")
    assert page.content.decode().count("reported by the ESP") == 2


def test_postmark_delivery_of_a_message_it_had_sent_changes_nothing(client, sent_by):
    message = sent_by("postmark")
    body = {
        "RecordType": "Delivery", "ServerId": 23, "MessageID": message.esp_message_id,
        "Recipient": "bob@example.net", "DeliveredAt": "2026-12-05T13:28:10.2735393-04:00",
        "Details": "Test delivery webhook details",
    }  # fmt: skip
    assert post(client, "postmark", body, **AUTH).status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert DeliveryAttempt.objects.filter(message=message).count() == 1


def test_an_event_that_could_not_be_stored_is_no_replay_when_the_esp_sends_it_again(
    client, sent_by, monkeypatch
):
    from django.db import OperationalError

    from tracking.delivery import esp_events

    message = sent_by("mailgun")
    body = mailgun_signed(mailgun_event(message, "delivered"))

    def database_away(*args, **kwargs):
        raise OperationalError("the database is away")

    with monkeypatch.context() as patch:
        patch.setattr(esp_events, "_delivered", database_away)
        assert post(client, "mailgun", body, **AUTH).status_code == 503
    assert post(client, "mailgun", body, **AUTH).status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert refusals("mailgun") == {}


@pytest.mark.django_db(transaction=True)
def test_the_real_worker_sends_through_the_esp_and_its_event_makes_the_message_sent(
    alice, client, mail_servers, settings
):
    """Settings as a deployment gives them: ANYMAIL_* environment variables of the worker."""
    from tests.worker import start_worker, stop_worker, wait_until

    api = EspApi("mailgun").start()
    LinkFactory(account=alice.account, node__account=alice.account, link_id="l1")
    worker = start_worker(
        mail_servers,
        DELIVERY_TRANSPORT="anymail",
        ANYMAIL_ESP="mailgun",
        ANYMAIL_MAILGUN_API_KEY="key-test",
        ANYMAIL_MAILGUN_API_URL=f"{api.url}/v3",
        ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
        ANYMAIL_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    try:
        body = {
            "link_id": "l1", "sender_address": "ann@brand.example", "sender_name": "Ann",
            "recipient_address": "bob@example.net", "recipient_name": "Bob", "subject": "Hi",
            "text_content": "Plain", "html_content": "<p>HTML</p>",
        }  # fmt: skip
        response = alice.client.post("/rest/v1/email", body, format="json")
        assert response.status_code == 201
        sent = Message.objects.filter(message_id=response.json()["message_id"])
        wait_until(lambda: sent.exclude(esp_message_id="").exists(), timeout=30)
    finally:
        log = stop_worker(worker)
        api.stop()
    message = sent.get()
    assert message.disposition == Disposition.QUEUED, log
    assert [r.path for r in api.requests] == ["/v3/brand.example/messages"]
    assert mail_servers.mx.received == []
    settings.ANYMAIL = api.anymail_settings()  # the web process's, as the worker's
    event = mailgun_event(message, "delivered")
    assert post(client, "mailgun", mailgun_signed(event), **AUTH).status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT


# --- SendGrid, SparkPost, Amazon SES: delivered (their documented shapes) -------------------


def sendgrid_delivered(message: Message) -> list:
    return [{
        "ip": "167.89.17.173", "response": "250 2.0.0 OK 1461095248 - gsmtp ",
        "smtp-id": "<wrfRRvF7Q0GgwUo2CvDmEA@ismtpd0006p1sjc2.sendgrid.net>",
        "sg_event_id": "nOSv8m0eTQ-vxvwNwt3fZQ", "sg_message_id": "wrfRRvF7Q0GgwUo2CvDmEA.0",
        "tls": 1, "event": "delivered", "email": message.recipient_address,
        "timestamp": 1461095250, "anymail_id": message.esp_message_id,
    }]  # fmt: skip


def sparkpost_delivered(message: Message) -> list:
    return [{"msys": {"message_event": {
        "type": "delivery", "event_id": "92356927693813856",
        "rcpt_to": message.recipient_address, "raw_rcpt_to": message.recipient_address,
        "rcpt_meta": {}, "timestamp": "1454442600", "transmission_id": message.esp_message_id,
    }}}]  # fmt: skip


def ses_delivered(message: Message) -> dict:
    """An SNS notification carrying SES's Delivery event."""
    ses_event = {
        "notificationType": "Delivery",
        "mail": {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "messageId": message.esp_message_id,
            "destination": [message.recipient_address],
        },
        "delivery": {
            "timestamp": "2016-01-27T14:59:38.237Z",
            "recipients": [message.recipient_address],
            "processingTimeMillis": 546,
            "reportingMTA": "a8-70.smtp-out.amazonses.com",
            "smtpResponse": "250 ok:  Message 64111812 accepted",
            "remoteMtaIp": "127.0.2.0",
        },
    }
    return {
        "Type": "Notification",
        "MessageId": "19ba9823-d7f2-53c1-860e-cb10e0d13dfc",
        "Message": json.dumps(ses_event) + "\n",
        "Timestamp": "2018-03-26T17:58:59.675Z",
    }


@pytest.mark.parametrize(
    ("esp", "payload"),
    [
        ("sendgrid", sendgrid_delivered),
        ("sparkpost", sparkpost_delivered),
        ("amazon_ses", ses_delivered),
    ],
)
def test_delivered_from_the_other_esps_makes_the_message_sent(client, sent_by, esp, payload):
    message = sent_by(esp)
    assert message.disposition == Disposition.QUEUED and message.esp_message_id
    body = json.dumps(payload(message))
    headers = {}
    if esp == "amazon_ses":
        headers = {
            "x-amz-sns-message-id": "19ba9823-d7f2-53c1-860e-cb10e0d13dfc",
            "x-amz-sns-message-type": "Notification",
        }
    kind = "text/plain; charset=UTF-8" if esp == "amazon_ses" else "application/json"
    forged = client.post(f"/anymail/{esp}/tracking/", body, content_type=kind, headers=headers)
    # No basic auth: refused. SNS first posts without it and sends it on anymail's 401
    # challenge, so that is no forgery to count.
    ses = esp == "amazon_ses"
    assert forged.status_code == (401 if ses else 400)
    response = client.post(
        f"/anymail/{esp}/tracking/", body, content_type=kind, headers=headers, **AUTH
    )
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert refusals(esp) == ({} if ses else {"bad_signature": 1})


def test_an_unknown_sns_message_type_is_a_400_not_a_500(client, sent_by):
    sent_by("amazon_ses")
    body = {"Type": "Bogus", "MessageId": "1"}
    headers = {"x-amz-sns-message-id": "1", "x-amz-sns-message-type": "Bogus"}
    response = client.post(
        "/anymail/amazon_ses/tracking/",
        json.dumps(body),
        content_type="text/plain",
        headers=headers,
        **AUTH,
    )
    assert response.status_code == 400
    assert refusals("amazon_ses") == {"malformed": 1}


@pytest.mark.parametrize("path", [str(route.pattern) for route in esp_routes])
@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("", "application/json"),
        ("{", "application/json"),
        ("[]", "application/json"),
        ("null", "application/json"),
        ('{"Type": "Notification", "MessageId": "1", "Message": "{"}', "text/plain"),
        ('[{"msys": null}, {"event": 1}]', "application/json"),
        (
            "email=%00&envelope=not-json&token=1&timestamp=x&signature=y",
            "application/x-www-form-urlencoded",
        ),
    ],
)
def test_whatever_is_posted_to_an_esp_webhook_is_never_a_500(client, settings, path, body, kind):
    settings.ANYMAIL = EspApi("mailgun").anymail_settings()  # secrets only; nothing started
    headers = {"x-amz-sns-message-type": "Notification", "x-amz-sns-message-id": "1"}
    response = client.post(f"/anymail/{path}", body, content_type=kind, headers=headers, **AUTH)
    assert response.status_code < 500 or response.status_code == 503, response.content[:300]
    assert response.status_code != 503 or b"not configured" not in response.content
