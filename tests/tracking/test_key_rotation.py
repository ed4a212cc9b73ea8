"""Rotating SECRET_KEY: mail in flight keeps its click links, pixel and bounce address while
the old key is in SECRET_KEY_FALLBACKS, and loses them once it is dropped. Sent through the
API, delivered to the loopback MX, its links fetched over the tracking endpoints and a DSN
sent to its return path through the real inbound SMTP server."""

from __future__ import annotations

import email
import smtplib
import uuid
from email.policy import default as default_policy

import pytest
from django.core import signing
from django.test import Client
from django.test.utils import override_settings
from selectolax.lexbor import LexborHTMLParser

from tests.conversations.conftest import eml, inbound_server  # noqa: F401 (a fixture)
from tests.factories import LinkFactory, MessageFactory
from tests.worker import deliver_due, work
from tracking.delivery.verp import verp_address, verp_message_id
from tracking.engagement import tokens
from tracking.models import Disposition, Message, TrackingEvent

OLD_KEY = "old-key-kept-in-fallbacks-" + "o" * 40
NEW_KEY = "new-key-after-the-rotation-" + "n" * 40
# The key every installation used before keys were generated: anyone could sign with it.
PUBLIC_KEY = "dev-insecure-change-me-0123456789abcdefghijklmnopqrstuvwxyz"
PHISH = "https://evil.example/phish"
BASE = "http://testserver"
READER = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36"
)


@pytest.fixture
def sent(alice, settings, mail_servers, inbound_server):  # noqa: F811
    """A message sent and delivered under OLD_KEY: its click link, pixel and return path."""
    settings.TRACKING_BASE_URL = BASE
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = OLD_KEY, []
    LinkFactory(account=alice.account, node__account=alice.account, link_id="1234")
    response = alice.client.post(
        "/rest/v1/email",
        {
            "link_id": "1234", "sender_address": "bob.bob@iovox.com", "sender_name": "Bob",
            "recipient_address": "bob@example.net", "recipient_name": "Billy",
            "subject": "Spring", "text_content": "Spring offers",
            "html_content": '<p><a href="https://shop.example/spring">Spring offers</a></p>',
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    deliver_due()
    [received] = mail_servers.mx.received
    html = email.message_from_bytes(received.data, policy=default_policy).get_body(("html",))
    document = LexborHTMLParser(html.get_content())
    message = Message.objects.get(message_id=response.json()["message_id"])
    assert message.disposition == Disposition.SENT
    return {
        "message": message,
        "click": document.css_first("a").attributes["href"].removeprefix(BASE),
        "pixel": document.css_first("img").attributes["src"].removeprefix(BASE),
        "return_path": received.mail_from,
    }


def bounce(inbound_server, return_path: str) -> None:  # noqa: F811
    dsn = eml("postfix_dsn_to_verp.eml", sender="bob@example.net", to=return_path)
    inbound_server.send(dsn, mail_from="", to=return_path)
    work()  # the worker's routing loop hands it to bounce processing


def test_after_a_rotation_mail_in_flight_keeps_its_links_pixel_and_bounce_address(
    sent,
    settings,
    inbound_server,  # noqa: F811
):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, [OLD_KEY]
    reader = Client(HTTP_USER_AGENT=READER, REMOTE_ADDR="203.0.113.7")

    click = reader.get(sent["click"])
    assert click.status_code == 302 and click["Location"] == "https://shop.example/spring"
    assert reader.get(sent["pixel"]).status_code == 200
    bounce(inbound_server, sent["return_path"])

    message = sent["message"]
    message.refresh_from_db()
    assert message.disposition == Disposition.RECEIVED_BOUNCED
    assert sorted(message.events.values_list("kind", flat=True)) == ["bounce", "click", "open"]
    # New mail is signed with the new key only.
    assert verp_address(message) != sent["return_path"]
    settings.SECRET_KEY_FALLBACKS = []
    assert verp_message_id(verp_address(message)) == message.message_id


def test_once_the_old_key_is_dropped_what_it_signed_is_refused(
    sent,
    settings,
    inbound_server,  # noqa: F811
):
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = NEW_KEY, []
    reader = Client(HTTP_USER_AGENT=READER, REMOTE_ADDR="203.0.113.7")

    click = reader.get(sent["click"])
    assert click.status_code == 404 and "Location" not in click
    assert reader.get(sent["pixel"]).status_code == 404
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        bounce(inbound_server, sent["return_path"])
    assert refused.value.recipients[sent["return_path"]][0] == 550

    message = sent["message"]
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("forger_key", [PUBLIC_KEY, "a-key-of-someone-else-" + "x" * 40])
def test_a_click_token_forged_for_a_phishing_page_is_a_404_never_a_redirect(forger_key, settings):
    message = MessageFactory()
    with override_settings(SECRET_KEY=forger_key, SECRET_KEY_FALLBACKS=[]):
        forged = [
            tokens.click_token(message.message_id, PHISH),
            tokens.click_token(uuid.uuid4(), PHISH),
        ]
    # Our own signature of a genuine link, under the phishing URL's payload.
    genuine = tokens.click_token(message.message_id, "https://shop.example/")
    forged.append(f"{forged[0].split('.')[0]}.{genuine.split('.')[1]}")
    for token in forged:
        response = Client().get(f"/t/c/{token}")
        assert response.status_code == 404 and "Location" not in response
    assert not TrackingEvent.objects.exists()


@pytest.mark.django_db
def test_links_of_mail_signed_before_this_signing_module_still_verify(settings):
    """Tokens made by Django's Signer (the earlier code) are the same strings."""
    message_id = uuid.uuid4()
    click = tokens.click_token(message_id, "https://shop.example/")
    payload = click.split(".")[0]
    signer = signing.Signer(salt="tracking.engagement.click", sep=".")
    assert signer.sign(payload) == click
    pixel = tokens.open_token(message_id)
    assert signing.Signer(salt="tracking.engagement.open", sep=".").sign(pixel[:22]) == pixel


@pytest.mark.django_db
def test_a_verp_address_needs_its_whole_signature():
    address = verp_address(MessageFactory())
    local, domain = address.split("@")
    assert verp_message_id(address) is not None
    assert verp_message_id(f"{local[:-2]}@{domain}") is None
    assert verp_message_id(f"{local.rsplit('.', 1)[0]}.@{domain}") is None
