from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tracking.engagement import tokens
from tracking.engagement.rewrite import PIXEL_TEMPLATE, html_add_tracking, text_add_tracking

MESSAGE_ID = uuid.UUID("fb8fe1d0-113d-499a-83d5-58410040c67c")


@pytest.fixture(autouse=True)
def tracking_base(settings):
    settings.TRACKING_BASE_URL = "https://t.example.net"


def click(url: str, message_id: uuid.UUID = MESSAGE_ID) -> str:
    return tokens.click_url(message_id, url)


def pixel(message_id: uuid.UUID = MESSAGE_ID) -> str:
    return PIXEL_TEMPLATE.format(src=tokens.open_url(message_id))


# A real-world shape: XHTML doctype, Outlook conditional comments (VML button, Office
# settings), CSS with attribute selectors, entities, every kind of link and quoting.
NEWSLETTER = (Path(__file__).parent / "data" / "newsletter.html").read_text()


def test_links_become_click_urls_and_every_other_byte_is_kept():
    expected = (
        NEWSLETTER.replace(
            "https://shop.example.com/spring?utm_source=mail&amp;utm_medium=email",
            click("https://shop.example.com/spring?utm_source=mail&utm_medium=email"),
        )
        .replace("'https://shop.example.com/CAPS'", f"'{click('https://shop.example.com/CAPS')}'")
        .replace(
            "href=https://shop.example.com/unquoted",
            f"href={click('https://shop.example.com/unquoted')}",
        )
        .replace(
            '"https://shop.example.com/button"', f'"{click("https://shop.example.com/button")}"'
        )
        .replace("</body>", pixel() + "</body>")
    )
    assert html_add_tracking(NEWSLETTER, message_id=MESSAGE_ID) == expected


def test_the_outlook_vml_button_inside_a_conditional_comment_is_tracked():
    tracked = html_add_tracking(NEWSLETTER, message_id=MESSAGE_ID)
    button = click("https://shop.example.com/button")
    assert f'<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="{button}"' in tracked
    assert tracked.count(button) == 2
    assert "<!--[if mso]>" in tracked and "<![endif]-->" in tracked
    assert "<!--[if !mso]><!-- -->" in tracked and "<!--<![endif]-->" in tracked


def test_css_attribute_selectors_in_style_are_not_links():
    tracked = html_add_tracking(NEWSLETTER, message_id=MESSAGE_ID)
    assert 'a[href^="https://example.com/css"]' in tracked


def test_entities_in_an_href_are_decoded_once_so_the_click_leads_to_the_real_url():
    html = '<p><a href="https://x.example/?a=1&amp;b=2&#38;c=3">x</a></p>'
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    token = tracked.split("/t/c/")[1].split('"')[0]
    assert tokens.click_token_target(token).url == "https://x.example/?a=1&b=2&c=3"


def test_mailto_tel_anchors_and_unmarked_relative_links_are_kept():
    html = (
        '<a href="mailto:a@b.example">m</a><a href="tel:123">t</a><a href="#x">#</a>'
        '<a href="page.html">rel</a><a href="  ">blank</a><a href="javascript:void(0)">js</a>'
        '<a href="ftp://files.example/x">ftp</a>'
    )
    assert html_add_tracking(html, message_id=MESSAGE_ID) == html + pixel()


def test_links_marked_notrack_by_attribute_or_class_are_kept():
    html = (
        '<a data-notrack href="https://a.example/">a</a>'
        '<a class="Button NoTrack" href="https://b.example/">b</a>'
        '<a class="notracking" href="https://c.example/">c</a>'
    )
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    assert 'href="https://a.example/"' in tracked
    assert 'href="https://b.example/"' in tracked
    assert f'href="{click("https://c.example/")}"' in tracked


def test_relative_links_are_resolved_against_the_base_href():
    html = (
        '<html><head><base href="https://news.example/2026/issue/"></head><body>'
        '<a href="story.html?id=1">s</a><a href="/about">a</a><a href="//cdn.example/x">c</a>'
        '<a href="#top">t</a><a href="mailto:x@y.example">m</a></body></html>'
    )
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    assert f'href="{click("https://news.example/2026/issue/story.html?id=1")}"' in tracked
    assert f'href="{click("https://news.example/about")}"' in tracked
    assert f'href="{click("https://cdn.example/x")}"' in tracked
    assert '<base href="https://news.example/2026/issue/">' in tracked
    assert 'href="#top"' in tracked and 'href="mailto:x@y.example"' in tracked


def test_a_fragment_without_body_gets_the_pixel_at_its_end():
    html = '<p>Hi <a href="https://x.example/">there</a></p>'
    expected = f'<p>Hi <a href="{click("https://x.example/")}">there</a></p>{pixel()}'
    assert html_add_tracking(html, message_id=MESSAGE_ID) == expected


def test_a_document_without_a_body_end_tag_gets_the_pixel_before_the_html_end_tag():
    html = "<html><body><p>Hi</p></html>"
    assert (
        html_add_tracking(html, message_id=MESSAGE_ID) == f"<html><body><p>Hi</p>{pixel()}</html>"
    )


def test_the_pixel_goes_before_the_last_body_end_tag_not_one_inside_a_comment():
    html = "<html><body><p>Hi</p><!-- </body> --></body>\n</html>\n"
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    assert tracked == f"<html><body><p>Hi</p><!-- </body> -->{pixel()}</body>\n</html>\n"


def test_crlf_line_endings_and_multiline_tags_keep_offsets_right():
    html = '<html>\r\n<body>\r\n<a\r\n  class="x"\r\n  href="https://x.example/a">a</a>\r\n</body></html>'
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    assert tracked == html.replace("https://x.example/a", click("https://x.example/a")).replace(
        "</body>", pixel() + "</body>"
    )


def test_line_breaks_inside_an_href_are_dropped_as_browsers_do():
    html = '<a href="https://x.example/long\n  /path?a=1&#10;&amp;b=\t2">x</a>'
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    assert click("https://x.example/long  /path?a=1&b=2") in tracked


def test_the_first_of_duplicated_href_attributes_is_the_one_tracked():
    html = '<a href="https://first.example/" href="https://second.example/">x</a>'
    tracked = html_add_tracking(html, message_id=MESSAGE_ID)
    assert click("https://first.example/") in tracked
    assert 'href="https://second.example/"' in tracked


def test_a_quoted_tracked_message_is_tracked_for_the_new_message_and_its_pixel_dropped():
    earlier = uuid.uuid4()
    quoted = html_add_tracking('<p><a href="https://x.example/">x</a></p>', message_id=earlier)
    reply = f"<html><body><p>Thanks!</p><blockquote>{quoted}</blockquote></body></html>"
    tracked = html_add_tracking(reply, message_id=MESSAGE_ID)
    assert tokens.open_url(earlier) not in tracked
    assert tokens.click_url(earlier, "https://x.example/") not in tracked
    assert click("https://x.example/") in tracked
    assert tracked.count(tokens.open_url(MESSAGE_ID)) == 1


def test_empty_html_is_returned_unchanged():
    assert html_add_tracking("", message_id=MESSAGE_ID) == ""
    assert html_add_tracking("  \n", message_id=MESSAGE_ID) == "  \n"


def test_text_part_urls_become_click_urls_and_sentence_punctuation_stays_outside():
    text = (
        "See https://x.example/a?b=1. Or (https://en.example/wiki/Foo_(bar)), "
        "mail me@x.example, or <https://y.example/>!"
    )
    expected = (
        f"See {click('https://x.example/a?b=1')}. "
        f"Or ({click('https://en.example/wiki/Foo_(bar)')}), "
        f"mail me@x.example, or <{click('https://y.example/')}>!"
    )
    assert text_add_tracking(text, message_id=MESSAGE_ID) == expected


# --- forwarded and relayed mail (source MIME) -----------------------------------------------


def eml(text: str) -> bytes:
    return text.strip("\n").replace("\n", "\r\n").encode("latin-1") + b"\r\n"


FORWARDED = eml("""
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=sel;
\th=from:to:subject; bh=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG=;
\tb=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
From: =?utf-8?q?Al=C3=AFce?= <alice@example.org>
To: proxy123@proxy.example
Subject: A subject line long enough that a generator would fold it somewhere past 78
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/alternative; boundary="inner"

--inner
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: quoted-printable

Caf=C3=A9: https://shop.example/a
--inner
Content-Type: text/html; charset="iso-8859-1"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Caf=E9 <a href=3D"https://shop.example/a?x=3D1&amp;y=3D2">offer</a></p></body></html>
--inner--

--outer
Content-Type: text/html; charset="utf-8"
Content-Disposition: attachment; filename="invoice.html"

<a href="https://attachment.example/">not the body</a>
--outer
Content-Type: message/rfc822

Subject: the original
Content-Type: text/html

<a href="https://quoted.example/">an attached message</a>
--outer--
""")


def html_parts(raw: bytes) -> list:
    from email import message_from_bytes
    from email.policy import compat32

    return [
        part
        for part in message_from_bytes(raw, policy=compat32).walk()
        if part.get_content_type() == "text/html"
    ]


def test_forwarded_mail_gets_tracking_in_its_html_body_and_keeps_every_other_byte():
    from tracking.engagement.source_mime import mime_add_tracking

    tracked = mime_add_tracking(FORWARDED, message_id=MESSAGE_ID)
    body = html_parts(tracked)[0]
    assert body["Content-Transfer-Encoding"] == "quoted-printable"
    assert body.get_content_charset() == "iso-8859-1"
    html = body.get_payload(decode=True).decode("iso-8859-1")
    assert html == (
        f'<html><body><p>Café <a href="{click("https://shop.example/a?x=1&y=2")}">offer</a>'
        f"</p>{pixel()}</body></html>"
    )
    assert max(len(line) for line in tracked.split(b"\r\n")) <= 998
    # Headers (unfolded; less the DKIM signature over the old body), the text part and the
    # attachments: byte for byte.
    assert b"DKIM-Signature" in FORWARDED and b"DKIM-Signature" not in tracked
    unsigned = FORWARDED[FORWARDED.index(b"From: ") :]
    original_html = unsigned.split(b"<html>")[0], unsigned.split(b"</html>")[1]
    assert tracked.startswith(original_html[0]) and tracked.endswith(original_html[1])


def test_html_attachments_and_attached_messages_are_not_tracked():
    from tracking.engagement.source_mime import mime_add_tracking

    tracked = mime_add_tracking(FORWARDED, message_id=MESSAGE_ID)
    assert b'<a href="https://attachment.example/">not the body</a>' in tracked
    assert b'<a href="https://quoted.example/">an attached message</a>' in tracked


def test_a_base64_html_body_stays_base64_and_a_7bit_one_becomes_quoted_printable():
    from tracking.engagement.source_mime import mime_add_tracking

    for encoding, body in [
        ("base64", "PHA+PGEgaHJlZj0iaHR0cHM6Ly94LmV4YW1wbGUvIj54PC9hPjwvcD4="),
        ("7bit", '<p><a href="https://x.example/">x</a></p>'),
    ]:
        raw = eml(f"""
Subject: one part
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: {encoding}

{body}
""")
        part = html_parts(mime_add_tracking(raw, message_id=MESSAGE_ID))[0]
        expected_encoding = "base64" if encoding == "base64" else "quoted-printable"
        assert part["Content-Transfer-Encoding"] == expected_encoding
        html = part.get_payload(decode=True).decode()
        assert html.startswith(f'<p><a href="{click("https://x.example/")}">x</a></p>')
        assert html.rstrip().endswith(pixel())


def test_mail_without_an_html_body_or_with_an_unknown_charset_goes_out_unchanged():
    from tracking.engagement.source_mime import mime_add_tracking

    plain = eml("""
Subject: plain
Content-Type: text/plain

https://x.example/
""")
    odd = eml("""
Subject: odd
Content-Type: text/html; charset=x-no-such-charset

<a href="https://x.example/">x</a>
""")
    assert mime_add_tracking(plain, message_id=MESSAGE_ID) == plain
    assert mime_add_tracking(odd, message_id=MESSAGE_ID) == odd


def test_a_tracked_part_keeps_its_headers_in_order_and_only_its_encoding_changes():
    from tracking.engagement.source_mime import mime_add_tracking

    for cte_line, expected in [
        ("Content-Transfer-Encoding: 7bit\n", "quoted-printable"),
        ("", "quoted-printable"),  # none said: 7bit, which click URLs may overflow
        ("Content-Transfer-Encoding: BASE64\n", "base64"),
    ]:
        body = "PHA+eDwvcD4=" if expected == "base64" else "<p>x</p>"
        raw = eml(f"""
Subject: one part
MIME-Version: 1.0
Content-Type: text/html;
 charset="UTF-8"
{cte_line}Content-ID: <body@example.net>
X-Template: 7

{body}
""")
        part = html_parts(mime_add_tracking(raw, message_id=MESSAGE_ID))[0]
        names = [name for name, _ in part.items()]
        kept = ["Subject", "MIME-Version", "Content-Type"]
        if cte_line:
            assert names == [*kept, "Content-Transfer-Encoding", "Content-ID", "X-Template"]
        else:
            assert names == [*kept, "Content-ID", "X-Template", "Content-Transfer-Encoding"]
        assert part["Content-Type"] == 'text/html;\r\n charset="UTF-8"'
        assert part["Content-Transfer-Encoding"] == expected
        assert part.get_payload(decode=True).decode().endswith(pixel())


def test_the_scan_cache_keeps_ordinary_documents_only():
    """A campaign's HTML is scanned once; a huge body (anyone may send one) is never kept."""
    from tracking.engagement import rewrite

    rewrite._scan_cached.cache_clear()
    for _ in range(2):
        html_add_tracking(NEWSLETTER, message_id=uuid.uuid4())
    assert rewrite._scan_cached.cache_info().hits >= 1
    kept = rewrite._scan_cached.cache_info().currsize
    huge = "<p><a href='https://example.com/'>x</a></p>" * 20_000
    assert len(huge) > rewrite.SCAN_CACHE_MAX_CHARS
    tracked = html_add_tracking(huge, message_id=MESSAGE_ID)
    assert tracked.count(click("https://example.com/")) == 20_000
    assert rewrite._scan_cached.cache_info().currsize == kept
