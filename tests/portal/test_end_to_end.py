"""The portal over real traffic: a message sent through the REST API, delivered by the
worker's delivery loop (its turns, tests/worker.py) to a real SMTP server on loopback (found
through a real DNS server), as the portal shows it."""

from __future__ import annotations

import email
import uuid
from datetime import timedelta
from email.policy import default as default_policy

import time_machine
from django.test import Client
from django.utils import timezone
from selectolax.lexbor import LexborHTMLParser

from tests.factories import LinkFactory
from tests.worker import deliver_due
from tracking.models import Disposition, Message

READER = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"


def test_a_message_sent_through_the_api_shows_its_real_delivery_in_the_portal(
    alice, alice_portal, mail_servers, settings
):
    settings.EMAIL_RETRY_SCHEDULE = [60]
    settings.TRACKING_BASE_URL = "http://testserver"
    LinkFactory(node__account=alice.account, node__node_name="Bobs automotive", link_id="1234")
    mail_servers.mx.reply_to_rcpt["bob@example.net"] = "451 4.3.0 Try again later"
    start = timezone.now()

    response = alice.client.post(
        "/rest/v1/email",
        {
            "link_id": "1234",
            "sender_address": "bob.bob@iovox.com",
            "sender_name": "Bob Bob",
            "recipient_address": "bob@example.net",
            "recipient_name": "Billy Bob",
            "subject": "Your test drive",
            "text_content": "Hello",
            "html_content": '<html><body><p><a href="https://dealer.example/offer">'
            "See the offer</a></p></body></html>",
        },
        format="json",
    )
    deliver_due()
    message = Message.objects.get(message_id=uuid.UUID(response.json()["message_id"]))
    assert message.disposition == Disposition.QUEUED
    del mail_servers.mx.reply_to_rcpt["bob@example.net"]
    with time_machine.travel(start + timedelta(seconds=61)):
        assert deliver_due() == 1

    # The recipient opens the mail that arrived and clicks its link.
    [received] = mail_servers.mx.received
    html = email.message_from_bytes(received.data, policy=default_policy).get_body(("html",))
    document = LexborHTMLParser(html.get_content())
    [pixel] = [img.attributes["src"] for img in document.css("img")]
    [link] = [a.attributes["href"] for a in document.css("a")]
    reader = Client(HTTP_USER_AGENT=READER, REMOTE_ADDR="203.0.113.7")
    message.refresh_from_db()
    with time_machine.travel(message.delivery_date + timedelta(minutes=5), tick=False):
        assert reader.get(pixel.removeprefix("http://testserver")).status_code == 200
        assert reader.get(link.removeprefix("http://testserver")).status_code == 302

    detail = alice_portal.get(f"/messages/{message.message_id}")
    emails = alice_portal.get("/communications/?view=emails&status=sent")

    timeline = detail.context["timeline"]
    assert [(step.kind, step.badge) for step in timeline] == [
        ("received", ""),
        ("attempt-retry", ""),
        ("attempt-ok", ""),
        ("sent", ""),
        ("open", "Human"),
        ("click", "Human"),
    ]
    assert timeline[-1].detail == "https://dealer.example/offer"
    page = detail.content.decode()
    assert "451 4.3.0 Try again later" in page and "to mx.example.net" in page
    assert emails.context["kpis"].emails == 1 and emails.context["kpis"].read == 1
    assert "Your test drive" in emails.content.decode()
    assert len(mail_servers.mx.received) == 1
