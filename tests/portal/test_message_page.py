from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conversations.models import Conversation, ProxyDomain
from tests.factories import LinkFactory, MessageFactory
from tracking.models import Attachment, DeliveryAttempt, Disposition, TrackingEvent

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def delivered(alice):
    link = LinkFactory(node__account=alice.account, link_id="civic", link_name="Honda Civic")
    message = MessageFactory(
        link=link,
        subject="Your test drive",
        receive_date=T0,
        delivery_date=T0 + timedelta(minutes=6),
        disposition=Disposition.SENT,
        read_disposition="read",
        read_first_date=T0 + timedelta(hours=1),
        attempt_count=2,
    )
    DeliveryAttempt.objects.create(
        message=message,
        attempted_at=T0 + timedelta(seconds=1),
        mx_host="mx1.example.net",
        smtp_code=451,
        smtp_text="4.7.1 Try again later",
        outcome=Disposition.QUEUED,
    )
    DeliveryAttempt.objects.create(
        message=message,
        attempted_at=T0 + timedelta(minutes=6),
        mx_host="mx1.example.net",
        smtp_code=250,
        smtp_text="2.0.0 Ok: queued as 4F2A",
        outcome=Disposition.SENT,
    )
    TrackingEvent.objects.create(
        message=message,
        kind="open",
        occurred_at=T0 + timedelta(minutes=7),
        ip="66.249.93.1",
        user_agent="Mozilla/5.0 (via ggpht.com GoogleImageProxy)",
        automated=True,
        automated_reason="Gmail image proxy",
    )
    TrackingEvent.objects.create(
        message=message,
        kind="click",
        occurred_at=T0 + timedelta(hours=1),
        ip="203.0.113.9",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0",
        url="https://dealer.example/offer",
    )
    Attachment.objects.create(
        message=message,
        disposition="attachment",
        content_type="application/pdf",
        filename="quote.pdf",
        content=b"%PDF" * 256,
    )
    return message


def test_the_message_page_shows_all_its_fields(alice_portal, delivered):
    page = alice_portal.get(f"/messages/{delivered.message_id}").content.decode()

    for text in (
        str(delivered.message_id),
        "Your test drive",
        "2026-03-01 09:00:00",
        "2026-03-01 09:06:00",
        "Honda Civic",
        delivered.recipient_address,
        delivered.sender_address,
        "quote.pdf",
        "1.0\xa0KB",
    ):
        assert text in page, text


def test_the_timeline_lists_each_attempt_with_its_smtp_reply_then_opens_and_clicks(
    alice_portal, delivered
):
    response = alice_portal.get(f"/messages/{delivered.message_id}")

    steps = [(s.kind, s.title) for s in response.context["timeline"]]
    assert steps == [
        ("received", "Received"),
        ("attempt-retry", "Delivery attempt to mx1.example.net"),
        ("attempt-ok", "Delivery attempt to mx1.example.net"),
        ("sent", "Sent"),
        ("open", "Opened"),
        ("click", "Clicked"),
    ]
    page = response.content.decode()
    assert "451 4.7.1 Try again later" in page and "250 2.0.0 Ok: queued as 4F2A" in page
    assert "badge-auto" in page and "Gmail image proxy" in page
    assert "badge-human" in page and "https://dealer.example/offer" in page


def test_a_bounce_and_a_final_status_appear_on_the_timeline(alice_portal, alice):
    bounced = MessageFactory(
        link=LinkFactory(node__account=alice.account),
        disposition=Disposition.RECEIVED_BOUNCED,
        delivery_date=T0,
        receive_date=T0,
        status_detail="5.1.1 The email account does not exist",
    )
    TrackingEvent.objects.create(
        message=bounced, kind="bounce", occurred_at=T0 + timedelta(minutes=3)
    )
    nomx = MessageFactory(link=bounced.link, disposition=Disposition.NO_MX_RECORD, receive_date=T0)

    bounced_steps = alice_portal.get(f"/messages/{bounced.message_id}").context["timeline"]
    nomx_steps = alice_portal.get(f"/messages/{nomx.message_id}").context["timeline"]

    assert [s.kind for s in bounced_steps] == ["received", "sent", "bounce"]
    assert bounced_steps[-1].detail == "5.1.1 The email account does not exist"
    assert nomx_steps[-1].title == "No MX record for the recipient's domain"


def test_extra_headers_are_listed(alice_portal, alice):
    message = MessageFactory(
        link=LinkFactory(node__account=alice.account), headers={"In-Reply-To": "<a@b.example>"}
    )

    page = alice_portal.get(f"/messages/{message.message_id}").content.decode()

    assert "In-Reply-To: &lt;a@b.example&gt;" in page


def test_the_html_content_is_shown_in_a_sandboxed_frame_with_a_policy_of_its_own(
    alice_portal, alice
):
    message = MessageFactory(
        link=LinkFactory(node__account=alice.account),
        html_content='<p style="color:red">Hi</p><script>alert("x")</script>',
    )

    page = alice_portal.get(f"/messages/{message.message_id}").content.decode()
    preview = alice_portal.get(f"/messages/{message.message_id}/preview")

    assert f'sandbox="" src="/messages/{message.message_id}/preview"' in page
    assert "<script>alert" not in page
    assert preview.content.decode() == '<base target="_blank">' + message.html_content
    policy = preview["Content-Security-Policy"]
    # Remote fetches (the tracking pixel) and scripts are blocked, the message's styles kept,
    # and the document is sandboxed even when opened on its own.
    assert "default-src 'none'" in policy and "style-src 'unsafe-inline'" in policy
    assert "script-src" not in policy and "sandbox" in policy
    assert preview["X-Frame-Options"] == "SAMEORIGIN"


def test_bob_cannot_preview_alices_message(bob_portal, delivered):
    assert bob_portal.get(f"/messages/{delivered.message_id}/preview").status_code == 404


def test_a_conversation_message_shows_the_whole_thread(alice_portal, alice, bob):
    link = LinkFactory(node__account=alice.account)
    conversation_id = uuid.uuid4()
    Conversation.objects.create(
        conversation_id=conversation_id,
        account=alice.account,
        link=link,
        proxy_domain=ProxyDomain.objects.create(domain="talk.example"),
        proxy_address="hn7m890cfqt234@talk.example",
        party_a_address="bob.bob@iovox.com",
        party_b_address="bob@customer.com",
    )
    first = MessageFactory(
        link=link, conversation_id=conversation_id, subject="Hello", receive_date=T0
    )
    MessageFactory(
        link=link,
        conversation_id=conversation_id,
        subject="Re: Hello",
        receive_date=T0 + timedelta(hours=2),
    )
    MessageFactory(link=link, subject="Unrelated")
    # bob's message carrying the same id never joins alice's thread
    MessageFactory(link=LinkFactory(node__account=bob.account), conversation_id=conversation_id)

    response = alice_portal.get(f"/messages/{first.message_id}")

    thread = list(response.context["thread"])
    assert [m.subject for m in thread] == ["Hello", "Re: Hello"]
    page = response.content.decode()
    assert "hn7m890cfqt234@talk.example" in page and "(this message)" in page


@pytest.mark.parametrize("message_id", ["not-a-uuid", "0bf8a4ca-e4e5-4dd3-8c3b-eec02f0c7314"])
def test_an_unknown_message_is_a_404(alice_portal, message_id):
    response = alice_portal.get(f"/messages/{message_id}")

    assert response.status_code == 404
    assert "This page does not exist" in response.content.decode()


def test_bob_cannot_open_alices_message(bob_portal, delivered):
    assert bob_portal.get(f"/messages/{delivered.message_id}").status_code == 404


def test_the_message_page_costs_a_fixed_number_of_queries(
    alice_portal, delivered, django_assert_max_num_queries
):
    for n in range(5):
        TrackingEvent.objects.create(
            message=delivered, kind="open", occurred_at=T0 + timedelta(days=n)
        )

    with django_assert_max_num_queries(9):
        response = alice_portal.get(f"/messages/{delivered.message_id}")

    assert len(response.context["timeline"]) == 11
