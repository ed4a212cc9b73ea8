from __future__ import annotations

import base64
import email
import uuid
from email.policy import default as default_policy

import pytest

from tests.factories import LinkFactory, MessageFactory
from tests.worker import deliver_due
from tracking.models import Attachment, DeliveryAttempt, Disposition, Message, TrackingEvent

pytestmark = pytest.mark.django_db


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def link(alice):
    return LinkFactory(account=alice.account, link_id="1234", node__account=alice.account)


def payload(**overrides):
    body = {
        "link_id": 1234,
        "sender_address": "bob.bob@iovox.com",
        "sender_name": "Bob Bob",
        "recipient_address": "bob@example.net",
        "recipient_name": "Billy Bob",
        "subject": "This is an E-Mail",
        "text_content": "This is plain text",
        "html_content": "<html><body>This is HTML</body></html>",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def post(actor, body):
    return actor.client.post("/rest/v1/email", body, format="json")


def test_spec_example_is_accepted_stored_received_and_queued_for_delivery(
    alice, link, django_capture_on_commit_callbacks
):
    body = payload(
        attachments=[
            {"filename": "bob.txt", "disposition": "attachment", "type": "text/plain",
             "body": "VGhpcyBpcyBhbiBhdHRhY2htZW50"},
            {"disposition": "inline", "type": "text/plain", "id": "bobpart0001",
             "body": "VGhpcyBpcyBhbiBhdHRhY2htZW50"},
        ]
    )  # fmt: skip
    with django_capture_on_commit_callbacks() as callbacks:
        response = post(alice, body)
    assert response.status_code == 201, response.json()
    assert set(response.json()) == {"message_id"}
    message = Message.objects.get(message_id=uuid.UUID(response.json()["message_id"]))
    assert uuid.UUID(response.json()["message_id"]).version == 4
    assert message.disposition == Disposition.RECEIVED
    assert message.link == link and message.account == alice.account
    assert message.recipient_domain == "example.net"
    assert message.smtp_message_id == f"<{message.message_id.hex}@iovox.email>"
    attachments = list(message.attachments.all())
    assert [(a.disposition, a.filename, a.content_id) for a in attachments] == [
        ("attachment", "bob.txt", ""),
        ("inline", "", "bobpart0001"),
    ]
    assert bytes(attachments[0].content) == b"This is an attachment"
    assert callbacks == []  # nothing to enqueue: the worker's delivery loop finds the message


def test_every_missing_field_is_listed_at_once(alice):
    response = post(alice, {})
    assert response.status_code == 400
    assert sorted(response.json()["errors"]) == sorted(
        f"{field} is required"
        for field in [
            "link_id", "sender_address", "sender_name", "recipient_address",
            "recipient_name", "subject", "text_content", "html_content",
        ]
    )  # fmt: skip


def test_unknown_link_and_empty_text_are_listed_together_like_the_spec(alice, link):
    response = post(alice, payload(link_id="nope", text_content=""))
    assert response.status_code == 400
    assert response.json() == {"errors": ["link_id does not exist", "text_content cannot be empty"]}


def test_a_link_of_another_account_does_not_exist(alice, bob):
    LinkFactory(account=bob.account, node__account=bob.account, link_id="bobs")
    response = post(alice, payload(link_id="bobs"))
    assert response.json() == {"errors": ["link_id does not exist"]}
    assert not Message.objects.exists()


def test_invalid_addresses_are_refused(alice, link):
    response = post(alice, payload(sender_address="not-an-address", recipient_address="a@"))
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "sender_address is not a valid email address",
        "recipient_address is not a valid email address",
    ]


def test_an_internationalised_domain_is_sent_as_punycode(alice, link):
    response = post(alice, payload(recipient_address="bob@bücher.example"))
    assert response.status_code == 201
    assert Message.objects.get().recipient_address == "bob@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "field, value",
    [
        ("subject", "Hello\r\nBcc: victim@example.org"),
        ("subject", "Hello\nX-Injected: 1"),
        ("sender_name", "Bob\rBcc: victim@example.org"),
        ("recipient_name", "Billy\n"),
        ("proxy_name", "Co\nBcc: x@example.org"),
        ("sender_address", "bob@iovox.com\r\nBcc: victim@example.org"),
        ("recipient_address", "bob@example.net\nBcc: victim@example.org"),
    ],
)
def test_line_breaks_in_header_values_are_refused(alice, link, field, value):
    response = post(alice, payload(**{field: value}))
    assert response.status_code == 400
    assert response.json() == {
        "errors": [f"{field} cannot contain line breaks or control characters"]
    }
    assert not Message.objects.exists()


def test_line_breaks_in_attachment_filename_and_id_are_refused(alice, link):
    attachments = [
        {"disposition": "attachment", "type": "text/plain", "filename": "a\r\nb.txt",
         "body": b64(b"x")},
        {"disposition": "inline", "type": "image/png", "id": "cid\nX-Evil: 1", "body": b64(b"x")},
        {"disposition": "attachment", "type": "text/plain\r\nX: 1", "filename": "c.txt",
         "body": b64(b"x")},
    ]  # fmt: skip
    response = post(alice, payload(attachments=attachments))
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "attachments[0].filename cannot contain line breaks or control characters",
        "attachments[1].id cannot contain line breaks or control characters",
        "attachments[2].type cannot contain line breaks or control characters",
    ]


def test_attachment_problems_are_all_listed(alice, link):
    attachments = [
        {"disposition": "attachment", "type": "text/plain", "body": "!!not base64!!"},
        {"disposition": "inline", "type": "image/png", "body": b64(b"png")},
        {"disposition": "embedded", "type": "nonsense", "body": b64(b"x")},
        {"filename": "x.txt"},
    ]
    response = post(alice, payload(link_id="missing", attachments=attachments))
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "link_id does not exist",
        "attachments[0].body is not valid base64",
        'attachments[1].id is required when disposition is "inline"',
        'attachments[2].disposition must be "inline" or "attachment"',
        'attachments[2].type is not a MIME type like "application/pdf"',
        "attachments[3].disposition is required",
        "attachments[3].type is required",
        "attachments[3].body is required",
    ]


def test_attachment_without_filename_is_refused(alice, link):
    attachments = [{"disposition": "attachment", "type": "text/plain", "body": b64(b"x")}]
    response = post(alice, payload(attachments=attachments))
    assert response.json() == {
        "errors": ['attachments[0].filename is required when disposition is "attachment"']
    }


def test_attachments_must_be_a_list_of_objects(alice, link):
    response = post(alice, payload(attachments="file.pdf"))
    assert response.status_code == 400
    assert response.json()["errors"][0].startswith("attachments")


def test_proxy_domain_is_not_configured_yet(alice, link):
    response = post(alice, payload(proxy_domain="example.com", proxy_name="Company Name"))
    assert response.status_code == 400
    assert response.json() == {"errors": ["proxy_domain is not configured for your account"]}


def test_without_a_proxy_step_every_proxy_domain_is_refused(alice, link, settings):
    """Tracking alone (EMAIL_PROXY_STEP unset) sends mail but knows no proxy domain."""
    from conversations.services import proxy_domain_add

    proxy_domain_add(domain="proxy.example.com")
    settings.EMAIL_PROXY_STEP = None
    response = post(alice, payload(proxy_domain="proxy.example.com"))
    assert response.status_code == 400
    assert response.json() == {"errors": ["proxy_domain is not configured for your account"]}
    assert post(alice, payload()).status_code == 201


def test_content_over_the_size_limit_is_413(alice, link, settings):
    settings.MAX_MESSAGE_SIZE = 1000
    attachments = [
        {"disposition": "attachment", "type": "application/octet-stream", "filename": "big.bin",
         "body": b64(b"\0" * 1000)}
    ]  # fmt: skip
    response = post(alice, payload(attachments=attachments))
    assert response.status_code == 413
    [error] = response.json()["errors"]
    assert error.startswith("message is too large") and "1000 bytes" in error
    assert not Message.objects.exists()


def test_request_body_over_the_size_limit_is_413(alice, link, settings):
    settings.MAX_REQUEST_SIZE = 2000
    response = post(alice, payload(html_content="x" * 5000))
    assert response.status_code == 413
    assert response.json()["errors"][0].startswith("request body is too large")


def test_malformed_json_is_400(alice, link):
    response = alice.client.post(
        "/rest/v1/email", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0].startswith("request body is not valid JSON")


def test_sending_needs_credentials(client, link):
    response = client.post("/rest/v1/email", payload(), content_type="application/json")
    assert response.status_code == 401
    assert "errors" in response.json()


def test_detail_shows_search_fields_attempts_and_events(alice, link):
    message = MessageFactory(
        link=link, disposition=Disposition.SENT, subject="Hi", proxy_address=""
    )
    DeliveryAttempt.objects.create(
        message=message, mx_host="mx.example.net", smtp_code=250, smtp_text="OK", outcome="sent"
    )
    TrackingEvent.objects.create(message=message, kind=TrackingEvent.Kind.BOUNCE)
    response = alice.client.get(f"/rest/v1/email/{message.message_id}")
    assert response.status_code == 200
    body = response.json()
    assert body["message_id"] == str(message.message_id)
    assert body["disposition"] == "sent" and body["read_disposition"] == "unread"
    assert body["link_id"] == "1234" and body["node_id"] == link.node.node_id
    assert body["subject"] == "Hi"
    assert len(body["receive_date"]) == 19 and body["receive_date"][10] == " "
    assert "delivery_date" not in body and "proxy_address" not in body
    assert "conversation_id" not in body and "read_first_date" not in body
    [attempt] = body["attempts"]
    assert attempt["mx_host"] == "mx.example.net" and attempt["smtp_code"] == 250
    assert attempt["outcome"] == "sent"
    assert [e["kind"] for e in body["events"]] == ["bounce"]


def test_detail_costs_a_fixed_number_of_queries(alice, link, django_assert_max_num_queries):
    message = MessageFactory(link=link)
    for _ in range(5):
        DeliveryAttempt.objects.create(message=message, outcome="queued")
    with django_assert_max_num_queries(6):
        assert alice.client.get(f"/rest/v1/email/{message.message_id}").status_code == 200


def test_detail_of_another_accounts_message_does_not_exist(alice, bob, link):
    message = MessageFactory(link=link)
    response = bob.client.get(f"/rest/v1/email/{message.message_id}")
    assert response.status_code == 404
    assert response.json() == {"errors": ["message_id does not exist"]}
    missing = alice.client.get(f"/rest/v1/email/{uuid.uuid4()}")
    assert missing.json() == {"errors": ["message_id does not exist"]}


def test_detail_route_leaves_other_email_paths_alone(alice):
    search = alice.client.get("/rest/v1/email/search")
    assert search.status_code == 200
    assert b"current_page" in b"".join(search.streaming_content)
    assert alice.client.get("/rest/v1/email/not-a-uuid").json() == {"errors": ["not found"]}


def test_sent_message_is_parsed_back_with_its_attachments(alice, link, mail_servers):
    attachments = [
        {"filename": "bob.txt", "disposition": "attachment", "type": "text/plain",
         "body": "VGhpcyBpcyBhbiBhdHRhY2htZW50"},
    ]  # fmt: skip
    response = post(alice, payload(attachments=attachments))
    deliver_due()
    message = Message.objects.get()
    assert message.disposition == Disposition.SENT
    [received] = mail_servers.mx.received
    parsed = email.message_from_bytes(received.data, policy=default_policy)
    assert parsed["Message-ID"] == message.smtp_message_id
    [part] = list(parsed.iter_attachments())
    assert part.get_filename() == "bob.txt"
    assert part.get_content() == "This is an attachment"
    detail = alice.client.get(f"/rest/v1/email/{response.json()['message_id']}").json()
    assert detail["disposition"] == "sent" and "delivery_date" in detail
    assert detail["attempts"][0]["smtp_code"] == 250
    assert Attachment.objects.count() == 1


def test_a_send_enqueues_no_task_and_the_delivery_loop_finds_it(alice, link, mail_servers):
    from django_q.models import OrmQ

    response = post(alice, payload())
    assert response.status_code == 201
    assert not OrmQ.objects.exists()  # the broker is not on the send path
    deliver_due()
    message = Message.objects.get(message_id=response.json()["message_id"])
    assert message.disposition == Disposition.SENT


# --- the link cache -------------------------------------------------------------------------


def delete_elsewhere(link) -> None:
    """Delete a link as another process would: no signal reaches this process's cache."""
    type(link).objects.filter(pk=link.pk)._raw_delete(using="default")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_attachment", [False, True], ids=["alone", "with-attachment"])
def test_a_link_deleted_by_another_process_while_cached_is_a_400_not_a_500(
    alice, link, with_attachment
):
    assert post(alice, payload()).status_code == 201  # the link is cached now
    Message.objects.all().delete()  # so the link can go
    delete_elsewhere(link)
    attachments = [{"filename": "a.txt", "disposition": "attachment", "type": "text/plain",
                    "body": b64(b"x")}] if with_attachment else None  # fmt: skip
    response = post(alice, payload(attachments=attachments))
    assert response.status_code == 400
    assert response.json() == {"errors": ["link_id does not exist"]}
    assert not Message.objects.exists()
    assert post(alice, payload()).status_code == 400  # looked up again, still gone


def test_a_link_renamed_in_this_process_is_looked_up_again(alice, link):
    assert post(alice, payload()).status_code == 201  # cached as "1234"
    link.link_id = "5678"
    link.save()
    response = post(alice, payload())
    assert response.json() == {"errors": ["link_id does not exist"]}
    assert post(alice, payload(link_id="5678")).status_code == 201


def test_a_cached_link_is_never_another_accounts(alice, bob, link):
    assert post(alice, payload()).status_code == 201  # alice's "1234" cached
    response = post(bob, payload())
    assert response.status_code == 400
    assert response.json() == {"errors": ["link_id does not exist"]}


def test_content_with_a_lone_surrogate_is_refused_by_the_fast_check(alice, link):
    import json

    body = json.dumps(payload(html_content="<p>ok</p>" * 1000 + "\ud800"))  # as "\\ud800"
    response = alice.client.post("/rest/v1/email", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "errors": ["html_content cannot contain NUL characters or lone surrogates"]
    }


def test_serializer_instances_share_no_field_state_even_across_threads(alice, link):
    """Fields are shallow copies of the declared ones (CopiedFieldsMixin): instances validated
    at the same time in several threads each see only their own data and errors."""
    import threading
    from types import SimpleNamespace

    from tracking.api.email_serializers import SendEmailSerializer

    context = {"request": SimpleNamespace(user=alice.credential)}
    first, second = SendEmailSerializer(context=context), SendEmailSerializer(context=context)
    assert first.fields["subject"] is not second.fields["subject"]
    assert first.fields["subject"].parent is first

    # Validated once here, so the threads find the link in the cache (their own database
    # connections could not see this test's rows).
    assert SendEmailSerializer(data=payload(), context=context).is_valid()
    results: dict[int, object] = {}

    def validate(n: int) -> None:
        attachment = {
            "filename": f"f{n}.txt",
            "disposition": "attachment",
            "type": "text/plain" if n % 2 == 0 else "not a type",
            "body": b64(b"x" * n),
        }
        serializer = SendEmailSerializer(
            data=payload(subject=f"subject {n}", attachments=[attachment]), context=context
        )
        valid = serializer.is_valid()
        results[n] = serializer.validated_data if valid else serializer.errors

    threads = [threading.Thread(target=validate, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for n, result in results.items():
        if n % 2 == 0:
            assert result["subject"] == f"subject {n}"
            assert result["attachments"][0].filename == f"f{n}.txt"
        else:
            assert set(result) == {"attachments"}
    assert len(results) == 8
