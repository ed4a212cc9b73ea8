from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone
from django_q.models import OrmQ

from conversations import tasks
from conversations.models import InboundMessage
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(UserFactory(account=None, is_staff=True, is_superuser=True))
    return client


def test_failed_messages_can_be_routed_again_from_admin(
    staff_client, django_capture_on_commit_callbacks
):
    failed = InboundMessage.objects.create(raw=b"x", status="failed", error="boom", attempts=6)
    routed = InboundMessage.objects.create(raw=b"x", status="routed")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/admin/conversations/inboundmessage/",
            {"action": "route_again", "_selected_action": [failed.pk, routed.pk]},
            follow=True,
        )
    assert response.status_code == 200
    assert "1 message(s) queued for routing." in response.content.decode()
    failed.refresh_from_db()
    routed.refresh_from_db()
    assert (failed.status, failed.error, failed.attempts) == ("pending", "", 0)
    assert routed.status == "routed"
    assert not OrmQ.objects.exists()  # the routing loop finds it


def test_an_inbound_message_page_shows_its_error_and_its_authentication(staff_client):
    inbound = InboundMessage.objects.create(
        raw=b"x",
        status="refused",
        error="x@example.com: not a party",
        rcpt_to=["p@ex.com"],
        spf="fail",
        dkim="none",
        dmarc="fail",
        authentication_results="localhost; spf=fail smtp.mailfrom=ex.com; dmarc=fail",
    )
    response = staff_client.get(f"/admin/conversations/inboundmessage/{inbound.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "not a party" in page
    assert "localhost; spf=fail smtp.mailfrom=ex.com; dmarc=fail" in page
    listing = staff_client.get("/admin/conversations/inboundmessage/?dmarc__exact=fail")
    assert listing.status_code == 200 and "p@ex.com" in listing.content.decode()


def test_routed_refused_and_failed_mail_is_purged_after_the_retention(settings):
    settings.INBOUND_RETENTION_DAYS = 30
    with time_machine.travel(timezone.now() - timedelta(days=31)):
        old = {s: InboundMessage.objects.create(raw=b"x", status=s) for s in InboundMessage.Status}
    fresh = InboundMessage.objects.create(raw=b"x", status="routed")
    assert tasks.purge()["inbound_messages"] == 3
    left = set(InboundMessage.objects.values_list("pk", flat=True))
    # What is still to be routed stays, however old.
    assert left == {old["pending"].pk, old["deferred"].pk, fresh.pk}
