"""DKIM signing of outgoing mail: keys added by command or admin, signing once a domain check
has seen their record, rotated with an overlap; messages signed by the worker just before the
MX gets them, every signature checked by dkimpy against TXT records served by the loopback DNS
server, as a receiver would."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from html import unescape

import dkim
import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.utils import timezone

from conversations.domains import domains_check
from tests.factories import LinkFactory
from tests.mailservers import dkim_signatures
from tests.worker import deliver_due
from tracking.models import Disposition, DkimKey, Message
from tracking.services.dkim_keys import (
    InvalidKey,
    dkim_key_add,
    dkim_key_generate,
    dkim_key_rotate,
)

pytestmark = pytest.mark.django_db

Status = DkimKey.Status


def publish(dns_server, key: DkimKey) -> None:
    dns_server.add(key.dns_name, "TXT", key.dns_txt_strings)


def signing(dns_server, key: DkimKey) -> DkimKey:
    """Publish the key's record and let a domain check see it: the key signs from now on."""
    publish(dns_server, key)
    domains_check(domains=[key.domain])
    key.refresh_from_db()
    assert key.status == Status.ACTIVE
    return key


def signature_tags(data: bytes, index: int = 0) -> dict[str, str]:
    """The tags of the index-th DKIM-Signature, topmost first."""
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = header.replace("\r\n ", " ").replace("\r\n\t", " ")
    lines = [line for line in unfolded.split("\r\n") if line.startswith("DKIM-Signature:")]
    value = lines[index].split(":", 1)[1]
    return dict(
        (part.split("=", 1)[0].strip(), part.split("=", 1)[1].strip())
        for part in value.split(";")
        if "=" in part
    )


@pytest.fixture
def send(alice, mail_servers):
    """Send one message through the API and the worker; the bytes the MX received."""
    LinkFactory(account=alice.account, node__account=alice.account, link_id="l1")

    def send(sender: str = "bob@brand.example") -> bytes:
        body = {
            "link_id": "l1", "sender_address": sender, "sender_name": "Bob",
            "recipient_address": "billy@example.net", "recipient_name": "Billy",
            "subject": "Hello, signed", "text_content": "Plain text",
            "html_content": '<p>HTML with <a href="https://shop.example/">a link</a></p>',
        }  # fmt: skip
        before = len(mail_servers.mx.received)
        response = alice.client.post("/rest/v1/email", body, format="json")
        assert response.status_code == 201, response.json()
        deliver_due()
        message = Message.objects.get(message_id=response.json()["message_id"])
        assert message.disposition == Disposition.SENT
        assert len(mail_servers.mx.received) == before + 1
        return mail_servers.mx.received[-1].data

    return send


# --- Which keys sign ----------------------------------------------------------------------


def test_a_new_key_signs_nothing_until_a_check_sees_its_record(send, mail_servers):
    key = dkim_key_add(domain="brand.example", selector="s2026")
    assert key.status == Status.PENDING
    assert b"DKIM-Signature" not in send("bob@brand.example")
    domains_check(domains=["brand.example"])  # not published yet: still waiting
    key.refresh_from_db()
    assert key.status == Status.PENDING
    signing(mail_servers.dns, key)
    data = send("bob@brand.example")
    tags = signature_tags(data)
    assert (tags["d"], tags["s"], tags["c"], tags["a"]) == (
        "brand.example",
        "s2026",
        "relaxed/relaxed",
        "rsa-sha256",
    )
    assert {"from", "to", "subject", "date", "message-id"} <= {
        name.strip() for name in tags["h"].split(":")
    }
    assert dkim_signatures(data, mail_servers.dns) == [("brand.example", True)]


def test_mail_from_a_keyed_domain_is_signed_by_it_first_then_by_the_bounce_domain(
    send, mail_servers, settings
):
    """The From-aligned signature on top (DMARC), the envelope domain's below it."""
    signing(mail_servers.dns, dkim_key_add(domain="brand.example"))
    signing(mail_servers.dns, dkim_key_add(domain=settings.BOUNCE_DOMAIN))
    data = send("bob@brand.example")
    assert dkim_signatures(data, mail_servers.dns) == [
        ("brand.example", True),
        (settings.BOUNCE_DOMAIN, True),
    ]
    received = mail_servers.mx.received[-1]
    assert received.mail_from.endswith("@" + settings.BOUNCE_DOMAIN)


def test_a_subdomain_is_signed_by_its_parent_domains_key(send, mail_servers):
    signing(mail_servers.dns, dkim_key_add(domain="brand.example"))
    data = send("news@mail.brand.example")
    assert dkim_signatures(data, mail_servers.dns) == [("brand.example", True)]


def test_other_domains_are_signed_by_the_bounce_domain_alone(send, mail_servers, settings):
    signing(mail_servers.dns, dkim_key_add(domain=settings.BOUNCE_DOMAIN))
    data = send("someone@unkeyed.example")
    assert dkim_signatures(data, mail_servers.dns) == [(settings.BOUNCE_DOMAIN, True)]


def test_without_an_active_key_mail_goes_out_unsigned(send):
    dkim_key_add(domain="brand.example")  # pending
    assert b"DKIM-Signature" not in send("bob@brand.example")


def test_a_retired_key_signs_nothing_and_loses_its_private_key(send, mail_servers):
    key = signing(mail_servers.dns, dkim_key_add(domain="brand.example"))
    assert b"DKIM-Signature" in send("bob@brand.example")
    from tracking.services.dkim_keys import dkim_key_retire

    assert dkim_key_retire(key=key)
    key.refresh_from_db()
    assert (key.status, key.private_key) == (Status.RETIRED, "")
    assert b"DKIM-Signature" not in send("bob@brand.example")
    assert not dkim_key_retire(key=key)


def test_a_tampered_message_fails_verification(send, mail_servers):
    signing(mail_servers.dns, dkim_key_add(domain="brand.example"))
    data = send("bob@brand.example")
    forged = data.replace(b"Hello, signed", b"Hello, forged")
    assert dkim_signatures(forged, mail_servers.dns) == [("brand.example", False)]


def test_a_broken_key_is_logged_and_the_other_still_signs(send, mail_servers, settings, caplog):
    signing(mail_servers.dns, dkim_key_add(domain="brand.example", selector="s1"))
    signing(mail_servers.dns, dkim_key_add(domain=settings.BOUNCE_DOMAIN))
    DkimKey.objects.filter(domain="brand.example").update(private_key="not a key")
    from tracking.delivery.dkim import dkim_key_cache

    dkim_key_cache.clear()  # as after a minute: the worker reads the keys again
    with caplog.at_level(logging.ERROR):
        data = send("bob@brand.example")
    assert dkim_signatures(data, mail_servers.dns) == [(settings.BOUNCE_DOMAIN, True)]
    assert "DKIM signing as s1._domainkey.brand.example failed" in caplog.text


def test_forwarded_alias_mail_keeps_its_authors_signature_and_gets_ours(
    alice, mail_servers, settings
):
    """Our signature goes on top of the bytes as they leave; the author's stays untouched."""
    from tracking.services.messages import message_accept

    author_pem, author_public = dkim_key_generate(bits=1024)
    mail_servers.dns.add_dkim("author.example", "a1", author_public)
    original = (
        b"From: Author <me@author.example>\r\nTo: alias@iovox.email\r\nSubject: Hi\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <orig-1@author.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlain words, no HTML.\r\n"
    )
    signed_by_author = dkim.sign(
        original, b"a1", b"author.example", author_pem.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
    ) + original  # fmt: skip
    signing(mail_servers.dns, dkim_key_add(domain=settings.BOUNCE_DOMAIN))
    link = LinkFactory(account=alice.account, node__account=alice.account)
    message_accept(
        account=alice.account, link=link, sender_address="me@author.example",
        sender_name="Author", recipient_address="dest@example.net", recipient_name="Dest",
        subject="Hi", text_content="Plain words, no HTML.", html_content="",
        direction="alias", source_mime=signed_by_author,
    )  # fmt: skip
    deliver_due()
    data = mail_servers.mx.received[-1].data
    assert dkim_signatures(data, mail_servers.dns) == [
        (settings.BOUNCE_DOMAIN, True),  # ours, on top
        ("author.example", True),  # the author's, still good
    ]
    assert data.endswith(signed_by_author)


# --- Rotation -----------------------------------------------------------------------------


def test_a_rotation_signs_with_the_old_key_until_the_new_record_is_seen_then_keeps_the_old_one_published(  # noqa: E501
    send, mail_servers, settings
):
    settings.DKIM_ROTATION_OVERLAP_DAYS = 7
    old = signing(mail_servers.dns, dkim_key_add(domain="brand.example", selector="old"))
    before = send("bob@brand.example")

    out = io.StringIO()
    call_command("rotate_dkim_key", "brand.example", stdout=out)
    new = DkimKey.objects.get(domain="brand.example", status=Status.PENDING)
    assert new.selector == f"iovox-{timezone.now():%Y%m%d}" and new.selector != old.selector
    assert new.dns_record in out.getvalue()
    # Rotating again while it waits hands out the same key.
    assert dkim_key_rotate(domain="brand.example") == new

    domains_check(domains=["brand.example"])  # new record not published: nothing changes
    assert signature_tags(send("bob@brand.example"))["s"] == "old"

    signing(mail_servers.dns, new)
    old.refresh_from_db()
    assert old.status == Status.RETIRING
    assert old.retire_after - timezone.now() > timedelta(days=6, hours=23)
    after = send("bob@brand.example")
    assert signature_tags(after)["s"] == new.selector
    # Mail the old key signed still verifies: its record stays published.
    assert dkim_signatures(before, mail_servers.dns) == [("brand.example", True)]
    assert dkim_signatures(after, mail_servers.dns) == [("brand.example", True)]
    row = domains_check(domains=["brand.example"])[0]
    old_finding = next(f for f in row.findings if f["name"] == old.dns_name)
    assert old_finding["status"] == "ok"
    assert "Replaced: keep this record until" in old_finding["detail"]

    with time_machine.travel(timezone.now() + timedelta(days=7, minutes=1)):
        row = domains_check(domains=["brand.example"])[0]
    old.refresh_from_db()
    assert (old.status, old.private_key) == (Status.RETIRED, "")
    old_finding = next(f for f in row.findings if f["name"] == old.dns_name)
    assert old_finding["detail"] == "replaced and no longer needed: remove this record"
    assert row.dkim == "ok"


def test_a_new_key_replaces_a_waiting_one_but_never_the_signing_one(mail_servers):
    active = signing(mail_servers.dns, dkim_key_add(domain="brand.example", selector="a"))
    waiting = dkim_key_add(domain="brand.example", selector="b")
    newer = dkim_key_add(domain="brand.example", selector="c")
    assert not DkimKey.objects.filter(pk=waiting.pk).exists()  # it never signed anything
    assert set(
        DkimKey.objects.filter(domain="brand.example").values_list("selector", "status")
    ) == {
        ("a", Status.ACTIVE),
        ("c", Status.PENDING),
    }
    assert newer.selector == "c"
    with pytest.raises(InvalidKey, match="already has a key with the selector a"):
        dkim_key_add(domain="brand.example", selector="a")
    assert active.status == Status.ACTIVE


# --- Commands -----------------------------------------------------------------------------


def test_the_command_generates_a_key_and_prints_its_txt_record():
    out = io.StringIO()
    call_command("add_dkim_key", "Brand.Example", "--selector", "s1", stdout=out)
    key = DkimKey.objects.get(domain="brand.example")
    assert key.selector == "s1" and key.status == Status.PENDING
    assert "BEGIN PRIVATE KEY" in key.private_key
    assert f's1._domainkey.brand.example. IN TXT "v=DKIM1; k=rsa; p={key.public_key[:20]}' in (
        out.getvalue()
    )
    assert "check_domains brand.example" in out.getvalue()
    assert all(len(chunk) <= 257 for chunk in key.dns_txt_strings.split(" "))


def test_the_command_takes_an_existing_key_beside_the_signing_one(tmp_path, mail_servers):
    signing(mail_servers.dns, dkim_key_add(domain="brand.example", selector="s1"))
    pem, public = dkim_key_generate()
    (tmp_path / "key.pem").write_text(pem)
    call_command(
        "add_dkim_key", "brand.example", "--private-key", str(tmp_path / "key.pem"),
        "--selector", "s2", stdout=io.StringIO(),
    )  # fmt: skip
    new = DkimKey.objects.get(selector="s2")
    assert (new.public_key, new.status) == (public, Status.PENDING)
    assert DkimKey.objects.get(selector="s1").status == Status.ACTIVE


@pytest.mark.parametrize(
    "args, error",
    [
        (["not a domain"], "is not a domain name"),
        (["brand.example", "--selector", "bad_selector"], "is not a valid selector"),
        (["brand.example", "--private-key", "/nonexistent/key.pem"], "cannot read"),
    ],
    ids=["domain", "selector", "missing-file"],
)
def test_the_command_refuses_bad_input_clearly(args, error):
    with pytest.raises(CommandError, match=error):
        call_command("add_dkim_key", *args, stdout=io.StringIO())
    assert not DkimKey.objects.exists()


def test_the_command_refuses_a_file_that_is_not_a_key(tmp_path):
    (tmp_path / "key.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(CommandError, match="not a usable PEM private key"):
        call_command(
            "add_dkim_key", "brand.example", "--private-key", str(tmp_path / "key.pem"),
            stdout=io.StringIO(),
        )  # fmt: skip


def test_rotate_all_starts_a_rotation_for_every_signing_domain(mail_servers, settings):
    signing(mail_servers.dns, dkim_key_add(domain="brand.example", selector="s1"))
    signing(mail_servers.dns, dkim_key_add(domain="other.example", selector="s1"))
    dkim_key_add(domain="waiting.example")
    call_command("rotate_dkim_key", "--all", stdout=io.StringIO())
    pending = DkimKey.objects.filter(status=Status.PENDING).exclude(domain=settings.BOUNCE_DOMAIN)
    assert sorted(pending.values_list("domain", flat=True)) == [
        "brand.example",
        "other.example",
        "waiting.example",  # not signing yet: its waiting key, untouched
    ]
    with pytest.raises(CommandError, match="name a domain, or --all"):
        call_command("rotate_dkim_key", stdout=io.StringIO())
    with pytest.raises(CommandError, match="is not a domain name"):
        call_command("rotate_dkim_key", "bad domain", stdout=io.StringIO())


# --- Admin --------------------------------------------------------------------------------


def test_admin_adds_a_key_shows_its_record_and_refuses_a_bad_one(admin_client):
    response = admin_client.post(
        "/admin/tracking/dkimkey/add/",
        {"domain": "brand.example", "selector": "s1", "private_key": ""},
        follow=True,
    )
    assert response.status_code == 200
    key = DkimKey.objects.get(domain="brand.example")
    assert key.status == Status.PENDING
    assert "s1._domainkey.brand.example. IN TXT" in response.content.decode()
    page = admin_client.get(f"/admin/tracking/dkimkey/{key.pk}/change/").content.decode()
    assert "v=DKIM1; k=rsa; p=" in page and "PRIVATE KEY" not in page
    response = admin_client.post(
        "/admin/tracking/dkimkey/add/",
        {"domain": "other.example", "selector": "s1", "private_key": "garbage"},
    )
    assert response.status_code == 200
    assert "not a usable PEM private key" in response.content.decode()
    assert not DkimKey.objects.filter(domain="other.example").exists()


def test_admin_rotates_checks_and_retires_keys(admin_client, mail_servers):
    old = signing(mail_servers.dns, dkim_key_add(domain="brand.example", selector="old"))
    changelist = "/admin/tracking/dkimkey/"
    response = admin_client.post(
        changelist, {"action": "rotate", "_selected_action": [old.pk]}, follow=True
    )
    new = DkimKey.objects.get(domain="brand.example", status=Status.PENDING)
    assert new.dns_record in unescape(response.content.decode())

    publish(mail_servers.dns, new)
    response = admin_client.post(
        changelist, {"action": "check_dns", "_selected_action": [new.pk]}, follow=True
    )
    assert "Checked brand.example: SPF could not check, DKIM ok, DMARC missing" in unescape(
        response.content.decode()
    )
    new.refresh_from_db()
    old.refresh_from_db()
    assert (new.status, old.status) == (Status.ACTIVE, Status.RETIRING)

    admin_client.post(changelist, {"action": "retire", "_selected_action": [new.pk]})
    new.refresh_from_db()
    assert new.status == Status.RETIRED
