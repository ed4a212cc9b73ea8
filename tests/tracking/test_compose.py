from __future__ import annotations

import email
from email.policy import default as default_policy

import pytest

from tests.factories import MessageFactory
from tracking.delivery.compose import message_build_mime, message_outgoing_bytes
from tracking.headers import HeaderInjection
from tracking.headers import header_values_check as check_header_values
from tracking.models import Attachment

pytestmark = pytest.mark.django_db


def build(message, *attachments):
    for attachment in attachments:
        attachment.message = message
        attachment.save()
    raw = message_build_mime(message)
    return raw, email.message_from_bytes(raw, policy=default_policy)


@pytest.fixture
def message():
    return MessageFactory(
        sender_name="Bob Bob",
        sender_address="bob@sender.example",
        recipient_name="Billy Bob",
        recipient_address="billy@example.net",
        subject="This is an E-Mail",
        text_content="This is plain text",
        html_content='<html><body>This is HTML <img src="cid:logo1"></body></html>',
        smtp_message_id="<0123abcd@iovox.email>",
    )


def test_text_and_html_make_multipart_alternative(message):
    raw, parsed = build(message)
    assert parsed.get_content_type() == "multipart/alternative"
    text, html = parsed.get_payload()
    assert text.get_content_type() == "text/plain"
    assert text.get_content().strip() == "This is plain text"
    assert html.get_content_type() == "text/html"
    assert "This is HTML" in html.get_content()
    assert parsed["From"] == "Bob Bob <bob@sender.example>"
    assert parsed["To"] == "Billy Bob <billy@example.net>"
    assert parsed["Subject"] == "This is an E-Mail"
    assert parsed["Message-ID"] == "<0123abcd@iovox.email>"
    assert email.utils.parsedate_to_datetime(parsed["Date"]) == message.receive_date.replace(
        microsecond=0
    )
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert "Return-Path" not in parsed  # the envelope carries it; the receiving MTA adds it


def test_inline_parts_go_in_multipart_related_with_their_content_id(message):
    logo = Attachment(
        disposition="inline", content_type="image/png", content_id="logo1", content=b"\x89PNG"
    )
    pdf = Attachment(
        disposition="attachment",
        content_type="application/pdf",
        filename="bob.pdf",
        content=b"%PDF-1.4",
    )
    _, parsed = build(message, logo, pdf)
    assert parsed.get_content_type() == "multipart/mixed"
    body, attached = parsed.get_payload()
    assert body.get_content_type() == "multipart/alternative"
    text, related = body.get_payload()
    assert related.get_content_type() == "multipart/related"
    html, image = related.get_payload()
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo1>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == b"\x89PNG"
    assert attached.get_filename() == "bob.pdf"
    assert attached.get_content_disposition() == "attachment"
    assert attached.get_content_type() == "application/pdf"
    assert attached.get_content() == b"%PDF-1.4"


def test_non_ascii_names_subject_and_filename_are_encoded(message):
    message.sender_name = "Zoë Ünal"
    message.recipient_name = "José"
    message.subject = ("Grüße aus Köln ✓ " * 6).strip()
    message.text_content = "naïve ✓"
    pdf = Attachment(
        disposition="attachment",
        content_type="application/pdf",
        filename="résumé naïve.pdf",
        content=b"%PDF",
    )
    raw, parsed = build(message, pdf)
    assert raw.isascii()
    assert b"=?utf-8?" in raw  # RFC 2047 encoded words
    assert b"filename*=utf-8''r%C3%A9sum%C3%A9" in raw  # RFC 2231
    assert parsed["Subject"] == message.subject
    assert parsed["From"].addresses[0].display_name == "Zoë Ünal"
    assert parsed["To"].addresses[0].display_name == "José"
    [attachment] = parsed.iter_attachments()
    assert attachment.get_filename() == "résumé naïve.pdf"
    assert parsed.get_body(("plain",)).get_content().strip() == "naïve ✓"


def test_long_html_lines_are_wrapped_for_smtp(message):
    message.html_content = "<p>" + "x" * 5000 + "</p>"
    raw, parsed = build(message)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert parsed.get_body(("html",)).get_content().strip() == message.html_content


def test_extra_headers_are_carried(message):
    message.headers = {"In-Reply-To": "<prev@example.net>", "References": "<prev@example.net>"}
    _, parsed = build(message)
    assert parsed["In-Reply-To"] == "<prev@example.net>"


def test_proxy_address_is_the_sender_when_set(message):
    message.proxy_address = "hn7m890cfqt234@example.com"
    message.proxy_name = "Company Name"
    _, parsed = build(message)
    assert parsed["From"] == "Company Name <hn7m890cfqt234@example.com>"


def test_source_mime_is_sent_as_it_is(message):
    message.source_mime = b"Subject: kept\r\n\r\nas is\r\n"
    assert message_outgoing_bytes(message) == b"Subject: kept\r\n\r\nas is\r\n"


def test_each_message_has_its_own_message_id(alice):
    from tests.factories import LinkFactory
    from tracking.services.messages import message_accept

    link = LinkFactory(account=alice.account, node__account=alice.account)
    fields = dict(
        sender_address="a@sender.example", sender_name="A", recipient_address="b@example.net",
        recipient_name="B", subject="s", text_content="t", html_content="<p>h</p>",
    )  # fmt: skip
    first = message_accept(account=alice.account, link=link, **fields)
    second = message_accept(account=alice.account, link=link, **fields)
    assert first.smtp_message_id != second.smtp_message_id
    assert first.smtp_message_id.endswith("@iovox.email>")


@pytest.mark.parametrize(
    "values",
    [{"subject": "a\r\nBcc: x@y"}, {"sender_name": "a\nb"}, {"X-Header": "v\r"}],
)
def test_the_service_refuses_line_breaks_too(values):
    with pytest.raises(HeaderInjection):
        check_header_values(values)


def test_our_headers_come_first_then_the_root_part_s_content_headers(message):
    raw = message_build_mime(message, [])
    names = [line.split(b":")[0] for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")]
    names = [name.decode() for name in names if name and not name[:1].isspace()]
    assert names[:5] == ["From", "To", "Subject", "Date", "Message-ID"]
    assert names[-2:] == ["MIME-Version", "Content-Type"]
    assert names.count("Content-Type") == 1
