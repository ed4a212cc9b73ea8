"""Open and click tracking from one end to the other: sent through the API, delivered to the
loopback MX, the pixel and a link of the HTML that arrived fetched over HTTP; and the web
process's batched writes under a real gunicorn."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from email.policy import default as default_policy
from pathlib import Path

import pytest
import requests
import time_machine
from django.test import Client, override_settings
from selectolax.lexbor import LexborHTMLParser

from tests.factories import LinkFactory, MessageFactory
from tests.mailservers import free_port
from tests.worker import ROOT, database_url, deliver_due
from tracking.engagement import tokens
from tracking.models import Message, ReadDisposition, TrackingEvent

HTML = """<!DOCTYPE html>
<html><head><!--[if mso]><style>td{font-family:Arial}</style><![endif]--></head>
<body><table><tr><td>
<a href="https://shop.example/spring?utm_source=mail&amp;id=7">Spring offers</a>
<a href="mailto:sales@shop.example">Write to us</a>
<a href="https://shop.example/account" data-notrack>Your account</a>
</td></tr></table></body></html>"""

READER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.fixture(autouse=True)
def tracking_base(settings):
    settings.TRACKING_BASE_URL = "http://testserver"


def send(alice) -> Message:
    """Send through the API; the worker's delivery loop takes its turns (tests/worker.py)."""
    LinkFactory(account=alice.account, node__account=alice.account, link_id="1234")
    response = alice.client.post(
        "/rest/v1/email",
        {
            "link_id": 1234, "sender_address": "bob.bob@iovox.com", "sender_name": "Bob Bob",
            "recipient_address": "bob@example.net", "recipient_name": "Billy Bob",
            "subject": "Spring", "text_content": "See https://shop.example/spring",
            "html_content": HTML,
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    deliver_due()
    return Message.objects.get(message_id=response.json()["message_id"])


def received_html(mail_servers) -> str:
    [received] = mail_servers.mx.received
    parsed = email.message_from_bytes(received.data, policy=default_policy)
    return parsed.get_body(("html",)).get_content()


@pytest.mark.django_db
def test_an_email_sent_through_the_api_is_read_when_its_pixel_or_a_link_is_fetched(
    alice, mail_servers
):
    message = send(alice)
    assert message.disposition == "sent" and message.read_disposition == ReadDisposition.UNREAD
    html = received_html(mail_servers)
    assert html.startswith("<!DOCTYPE html>") and "<!--[if mso]>" in html
    document = LexborHTMLParser(html)
    links = [a.attributes["href"] for a in document.css("a")]
    assert links[0].startswith("http://testserver/t/c/")
    assert links[1:] == ["mailto:sales@shop.example", "https://shop.example/account"]
    [pixel] = [img.attributes["src"] for img in document.css("img")]
    assert pixel.startswith("http://testserver/t/o/") and pixel.endswith(".gif")
    # The text part is left alone by default.
    [received] = mail_servers.mx.received
    assert b"See https://shop.example/spring" in received.data

    reader = Client(HTTP_USER_AGENT=READER, REMOTE_ADDR="203.0.113.7")
    opened = message.delivery_date + timedelta(minutes=3)
    with time_machine.travel(opened, tick=False):
        assert reader.get(pixel.removeprefix("http://testserver")).status_code == 200
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ
    assert message.read_first_date == opened
    with time_machine.travel(opened + timedelta(seconds=20), tick=False):
        click = reader.get(links[0].removeprefix("http://testserver"))
    assert click.status_code == 302
    assert click["Location"] == "https://shop.example/spring?utm_source=mail&id=7"

    detail = alice.client.get(f"/rest/v1/email/{message.message_id}").json()
    assert detail["read_disposition"] == "read" and "read_first_date" in detail
    assert [(e["kind"], e["automated"]) for e in detail["events"]] == [
        ("open", False),
        ("click", False),
    ]
    assert detail["events"][1]["url"] == "https://shop.example/spring?utm_source=mail&id=7"


@pytest.mark.django_db
def test_a_gateway_that_clicks_as_the_message_arrives_shows_as_a_link_scanner(alice, mail_servers):
    message = send(alice)
    link = LexborHTMLParser(received_html(mail_servers)).css_first("a").attributes["href"]
    Client(HTTP_USER_AGENT=READER).get(link.removeprefix("http://testserver"))
    detail = alice.client.get(f"/rest/v1/email/{message.message_id}").json()
    [event] = detail["events"]
    assert event["automated"] is True
    assert event["automated_reason"].endswith("after delivery (link scanner)")
    assert detail["read_disposition"] == "read"  # the spec's rule: any click marks read


@pytest.mark.django_db
def test_the_text_part_gets_click_urls_when_asked(alice, mail_servers, settings):
    settings.TRACKING_TEXT_LINKS = True
    send(alice)
    [received] = mail_servers.mx.received
    text = email.message_from_bytes(received.data, policy=default_policy).get_body(("plain",))
    assert text.get_content().startswith("See http://testserver/t/c/")


@pytest.mark.django_db(transaction=True)
def test_gunicorn_answers_at_once_and_a_graceful_stop_writes_every_buffered_hit(tmp_path):
    message = MessageFactory()
    log = (tmp_path / "gunicorn.log").open("w+")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "TRACKING_BASE_URL": f"http://127.0.0.1:{port}",
        "TRACKING_EVENT_FLUSH_INTERVAL": "60",  # nothing falls due while the test runs
        "DEBUG": "False",
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "iovox_email.wsgi", "--workers=2",
         f"--bind=127.0.0.1:{port}", "--log-level=warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with override_settings(TRACKING_BASE_URL=f"http://127.0.0.1:{port}"):
            pixel, click = (
                tokens.open_url(message.message_id),
                tokens.click_url(message.message_id, "https://shop.example/"),
            )
        wait_for(f"http://127.0.0.1:{port}/healthz", server, log)
        session = requests.Session()
        for _ in range(3):
            assert session.get(pixel, headers={"User-Agent": READER}, timeout=10).status_code == 200
        response = session.get(click, allow_redirects=False, timeout=10)
        assert (
            response.status_code == 302 and response.headers["Location"] == "https://shop.example/"
        )
        assert not TrackingEvent.objects.exists()  # buffered in the workers
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ
    assert sorted(message.events.values_list("kind", flat=True)) == [
        "click",
        "open",
        "open",
        "open",
    ]


FIRST_REQUEST = """
import django
django.setup()
from django.test import Client
assert Client().get({path!r}).status_code == 200  # this process's first request
from tracking.engagement import recorder  # imported only now, as in a web process
from tracking.models import TrackingEvent
print(TrackingEvent.objects.count(), recorder.tracking_events_flush())
"""


@pytest.mark.django_db(transaction=True)
def test_a_web_processs_first_hit_is_batched_like_the_others():
    """The request signals are connected when the app starts, not when the module that
    batches is first imported (during the first request, too late for it)."""
    message = MessageFactory()
    with override_settings(TRACKING_BASE_URL="http://testserver"):
        path = tokens.open_url(message.message_id).removeprefix("http://testserver")
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DJANGO_SETTINGS_MODULE": "iovox_email.settings",
        "TRACKING_BASE_URL": "http://testserver",
        "TRACKING_EVENT_FLUSH_INTERVAL": "60",
        "LOG_LEVEL": "WARNING",
    }
    done = subprocess.run(
        [sys.executable, "-c", FIRST_REQUEST.format(path=path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["0", "1"]  # buffered, not written; then written by a flush


def wait_for(url: str, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert server.poll() is None, log.seek(0) or log.read()
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:  # not listening yet, or workers still booting
            time.sleep(0.1)
    raise AssertionError("gunicorn did not start")


RELAYED = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: proxy123@proxy.example\r\n"
    b"Subject: Re: Honda Civic\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"\r\n"
    b"Still available? https://cars.example/civic\r\n"
    b"--b1\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"PHA+U3RpbGwgYXZhaWxhYmxlPyA8YSBocmVmPSJodHRwczovL2NhcnMuZXhhbXBsZS9jaXZp\r\n"
    b"YyI+VGhlIGNhcjwvYT48L3A+\r\n"
    b"--b1--\r\n"
)


@pytest.mark.django_db
def test_relayed_mail_is_delivered_with_tracking_in_its_html_part(mail_servers):
    message = MessageFactory(
        direction="relay",
        recipient_address="bob@example.net",
        recipient_domain="example.net",
        source_mime=RELAYED,
    )
    deliver_due()
    message.refresh_from_db()
    assert message.disposition == "sent"
    [received] = mail_servers.mx.received
    parsed = email.message_from_bytes(received.data, policy=default_policy)
    assert parsed["Subject"] == "Re: Honda Civic"
    assert parsed.get_body(("plain",)).get_content().strip().endswith("https://cars.example/civic")
    html = parsed.get_body(("html",))
    assert html["Content-Transfer-Encoding"] == "base64"
    link = LexborHTMLParser(html.get_content()).css_first("a").attributes["href"]
    with time_machine.travel(message.delivery_date + timedelta(minutes=1), tick=False):
        response = Client(HTTP_USER_AGENT=READER).get(link.removeprefix("http://testserver"))
    assert response["Location"] == "https://cars.example/civic"
    message.refresh_from_db()
    assert message.read_disposition == ReadDisposition.READ
    assert list(message.events.values_list("kind", "automated")) == [("click", False)]
