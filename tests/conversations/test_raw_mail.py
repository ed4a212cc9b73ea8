"""Reading and rewriting received messages: headers as lines, the body byte for byte."""

from __future__ import annotations

import email
import email.policy

import pytest

from conversations.inbound.raw_mail import (
    LOOP_HEADER,
    RELAY_KEEP,
    ParsedMessage,
    extract_content,
    format_address,
    forward_headers,
    keep_headers,
    loop_reason,
    split_message,
)
from tests.conversations.conftest import eml

PROXY = "hn7m890cfqt234@example.com"


def relay(raw: bytes) -> bytes:
    return keep_headers(
        raw,
        keep=RELAY_KEEP,
        prepend=[
            (LOOP_HEADER, PROXY),
            ("From", format_address("Company Name", PROXY)),
            ("To", "Billy Bob <b@b.example>"),
        ],
    )


def header_names(data: bytes) -> list[str]:
    return [name.lower() for name in email.message_from_bytes(data).keys()]


def test_relay_keeps_subject_date_content_headers_and_the_body_byte_for_byte():
    raw = eml("gmail_reply.eml", sender="bob@gmail.example", to=PROXY)
    out = relay(raw)
    message = email.message_from_bytes(out, policy=email.policy.default)
    assert message["From"] == f"Company Name <{PROXY}>"
    assert message["To"] == "Billy Bob <b@b.example>"
    assert message["Subject"] == "Re: Your test drive"
    assert message["Date"] == "Mon, 23 Nov 2026 10:20:00 +0000"
    assert message[LOOP_HEADER] == PROXY
    assert split_message(out)[1] == split_message(raw)[1]
    assert message.get_body(("plain",)).get_content().startswith("Great, see you Thursday –")
    assert header_names(out) == [
        "x-iovox-loop",
        "from",
        "to",
        "mime-version",
        "date",
        "subject",
        "content-type",
    ]


def test_relay_keeps_outlook_threading_and_nothing_that_names_the_writer():
    raw = eml("outlook_reply.eml", sender="billy@customer.example", to=PROXY)
    out = relay(raw)
    headers = split_message(out)[0].lower()
    for gone in (b"received", b"dkim", b"reply-to", b"billy@", b"billy.private", b"customer.ex"):
        assert gone not in headers
    message = email.message_from_bytes(out, policy=email.policy.default)
    assert message["Thread-Index"] == "AQHaHbN1mC2b3Qk7Tk6pV8mDbq0qWQ=="
    assert message["Thread-Topic"] == "Your test drive"
    assert message["Content-Language"] == "en-GB"


def test_forwarding_keeps_from_cc_and_the_dkim_signature_but_not_our_own_headers():
    raw = eml("gmail_reply.eml", sender="bob@gmail.example", to="alias@iovox.email")
    raw = (
        b"X-Iovox-Loop: forged\r\nX-IOVOX-Verified: yes\r\n"
        b"Authentication-Results: localhost; dmarc=pass header.from=gmail.example\r\n"
        b"Authentication-Results: (c) LOCALHOST (c); dkim=pass\r\n"
        b"Authentication-Results: mx.google.com; dkim=pass header.d=gmail.com\r\n"
    ) + raw
    out = forward_headers(raw, prepend=[(LOOP_HEADER, "alias@iovox.email")])
    message = email.message_from_bytes(out, policy=email.policy.default)
    assert message["From"] == "Bob Bob <bob@gmail.example>"
    assert message["Cc"] == "someone.else@customer.example"
    assert message["DKIM-Signature"] is not None
    assert message["Return-Path"] is None
    assert message.get_all(LOOP_HEADER) == ["alias@iovox.email"]
    assert message["X-Iovox-Verified"] is None
    # Only the results of others pass, never ones in our name (SMTP_HELO_NAME).
    assert message.get_all("Authentication-Results") == [
        "mx.google.com; dkim=pass header.d=gmail.com"
    ]
    assert out.startswith(b"X-Iovox-Loop: alias@iovox.email\r\n")
    assert split_message(out)[1] == split_message(raw)[1]


def test_non_ascii_display_names_are_encoded_and_line_breaks_never_start_a_header():
    address = format_address("Élodie Müller", PROXY)
    assert address.startswith("=?utf-8?") and address.endswith(f"<{PROXY}>")
    out = keep_headers(
        b"Subject: hi\r\n\r\nbody\r\n",
        keep=RELAY_KEEP,
        prepend=[("From", "Evil\r\nBcc: victim@example.net <p@example.com>")],
    )
    assert b"\r\nBcc:" not in out
    assert out.endswith(b"\r\n\r\nbody\r\n")


def test_nul_in_headers_and_content_is_read_as_a_replacement_character():
    raw = (
        b"From: A\x00B <a@x.example>\r\nSubject: hi\x00there =?utf-8?q?a=00b?=\r\n"
        b"Content-Type: text/plain\r\n\r\nbody\x00text\r\n"
    )
    parsed = ParsedMessage.parse(raw)
    assert parsed.subject == "hi\ufffdthere a\ufffdb"
    assert parsed.from_name == "A\ufffdB"
    assert extract_content(raw).text == "body\ufffdtext\r\n"


def test_non_ascii_headers_are_decoded():
    parsed = ParsedMessage.parse(eml("non_ascii_headers.eml", sender="e@mail.example.de"))
    assert parsed.from_name == "Élodie Müller"
    assert parsed.from_address == "e@mail.example.de"
    assert parsed.subject == "Prüfung der Angebote — 日本"
    assert parsed.problems == []
    assert extract_content(parsed.raw).text.startswith("Grüße aus München — 日本語")


def test_text_and_html_are_found_inside_nested_multiparts():
    content = extract_content(eml("nested_multipart.eml", sender="c@carla.example"))
    assert content.text.startswith("See the photo below")
    assert "cid:photo1@carla.example" in content.html


@pytest.mark.parametrize("name", ["malformed.eml", "postfix_dsn_to_verp.eml", "auto_reply.eml"])
def test_odd_messages_never_raise(name):
    parsed = ParsedMessage.parse(eml(name, sender="x@example.net", to="y@example.net"))
    extract_content(parsed.raw)
    loop_reason(parsed.raw)
    assert parsed.auto_submitted in (True, False)


def test_malformed_message_records_its_problems():
    parsed = ParsedMessage.parse(eml("malformed.eml", to="alias@iovox.email"))
    assert parsed.from_address == ""
    assert any("from header" in problem for problem in parsed.problems)


def test_signals_of_automatic_mail_are_read():
    assert ParsedMessage.parse(eml("auto_reply.eml")).auto_submitted
    assert ParsedMessage.parse(b"Auto-Submitted: no\r\n\r\nx").auto_submitted is False
    assert ParsedMessage.parse(b"Precedence: bulk\r\n\r\nx").auto_submitted
    assert ParsedMessage.parse(eml("postfix_dsn_to_verp.eml")).is_delivery_report
    assert not ParsedMessage.parse(eml("gmail_reply.eml")).is_delivery_report


def test_a_message_without_a_blank_line_is_all_headers():
    assert split_message(b"Subject: x\r\nFrom: a@b.example") == (
        b"Subject: x\r\nFrom: a@b.example\r\n",
        b"",
    )


def test_raw_utf8_and_latin1_headers_are_read_as_text():
    utf8 = ParsedMessage.parse("From: Jörg Müller <j@x.example>\r\nSubject: Grüße\r\n\r\n".encode())
    assert (utf8.from_name, utf8.subject) == ("Jörg Müller", "Grüße")
    latin = ParsedMessage.parse(
        b"From: J\xf6rg <j@x.example>\r\nSubject: K\xf6ln =?UTF-8?Q?=E2=80=94?=\r\n\r\n"
    )
    assert (latin.from_name, latin.subject) == ("Jörg", "Köln —")
    assert latin.problems == []


def test_an_unknown_charset_in_an_encoded_word_is_recorded_not_raised():
    parsed = ParsedMessage.parse(b"Subject: =?bogus?Q?x?=\r\n\r\n")
    assert parsed.subject == "=?bogus?Q?x?="
    assert parsed.problems == ["subject header is not readable: unknown encoding: bogus"]
