"""The portal over real traffic: a message sent through the REST API, delivered by the worker's
task to a real SMTP server on loopback (found through a real DNS server), as the portal shows
it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import time_machine
from django.utils import timezone

from tests.factories import LinkFactory
from tracking import tasks
from tracking.models import Disposition, Message


def test_a_message_sent_through_the_api_shows_its_real_delivery_in_the_portal(
    alice, alice_portal, mail_servers, sync_tasks, settings, django_capture_on_commit_callbacks
):
    settings.EMAIL_RETRY_SCHEDULE = [60]
    LinkFactory(node__account=alice.account, node__node_name="Bobs automotive", link_id="1234")
    mail_servers.mx.reply_to_rcpt["bob@example.net"] = "451 4.3.0 Try again later"
    start = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
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
                "html_content": "<html><body><p>Hello</p></body></html>",
            },
            format="json",
        )
    message = Message.objects.get(message_id=uuid.UUID(response.json()["message_id"]))
    assert message.disposition == Disposition.QUEUED
    del mail_servers.mx.reply_to_rcpt["bob@example.net"]
    with time_machine.travel(start + timedelta(seconds=61)):
        assert tasks.sweep_due_messages() == 1

    detail = alice_portal.get(f"/messages/{message.message_id}")
    emails = alice_portal.get("/communications/?view=emails&status=sent")

    assert [step.kind for step in detail.context["timeline"]] == [
        "received",
        "attempt-retry",
        "attempt-ok",
        "sent",
    ]
    page = detail.content.decode()
    assert "451 4.3.0 Try again later" in page and "to mx.example.net" in page
    assert emails.context["kpis"].emails == 1
    assert "Your test drive" in emails.content.decode()
    assert len(mail_servers.mx.received) == 1
