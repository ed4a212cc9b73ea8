"""DKIM signing of outgoing mail: keys added by command or admin, messages signed by the
worker just before the MX gets them, signatures checked by dkimpy against TXT records served
by the loopback DNS server."""

from __future__ import annotations

import io
import logging

import dkim
import dns.resolver
import pytest
from django.core.management import CommandError, call_command

from tests.factories import LinkFactory
from tests.worker import deliver_due
from tracking.delivery.dkim import dkim_key_add, dkim_key_generate
from tracking.models import Disposition, DkimKey, Message

pytestmark = pytest.mark.django_db


def publish(dns_server, key: DkimKey) -> None:
    dns_server.add(key.dns_name, "TXT", key.dns_txt_strings)


def verify(data: bytes, dns_server, index: int = 0) -> bool:
    """dkimpy's check of the index-th signature, its DNS lookups answered by the loopback
    DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port

    def txt(name: bytes, timeout: int = 5) -> bytes:
        answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=2)
        return b"".join(b"".join(record.strings) for record in answer)

    return dkim.DKIM(data).verify(idx=index, dnsfunc=txt)


def signature_tags(data: bytes) -> dict[str, str]:
    """The tags of the first (topmost) DKIM-Signature."""
    header = data.split(b"\r\n\r\n", 1)[0].decode()
    unfolded = header.replace("\r\n ", " ").replace("\r\n\t", " ")
    line = next(line for line in unfolded.split("\r\n") if line.startswith("DKIM-Signature:"))
    value = line.split(":", 1)[1]
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


def test_mail_from_a_domain_with_a_key_is_signed_and_verifies(send, mail_servers):
    key = dkim_key_add(domain="brand.example", selector="s2026")
    publish(mail_servers.dns, key)
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
    assert verify(data, mail_servers.dns)


def test_a_subdomain_is_signed_by_its_parent_domains_key(send, mail_servers):
    key = dkim_key_add(domain="brand.example")
    publish(mail_servers.dns, key)
    data = send("news@mail.brand.example")
    assert signature_tags(data)["d"] == "brand.example"
    assert verify(data, mail_servers.dns)


def test_other_domains_are_signed_by_the_bounce_domain_when_it_has_a_key(
    send, mail_servers, settings
):
    key = dkim_key_add(domain=settings.BOUNCE_DOMAIN)
    publish(mail_servers.dns, key)
    data = send("someone@unkeyed.example")
    assert signature_tags(data)["d"] == settings.BOUNCE_DOMAIN
    assert verify(data, mail_servers.dns)


def test_without_a_key_mail_goes_out_unsigned(send):
    dkim_key_add(domain="other.example")
    assert b"DKIM-Signature" not in send("bob@brand.example")


def test_a_switched_off_key_signs_nothing(send):
    key = dkim_key_add(domain="brand.example")
    key.is_active = False
    key.save()
    assert b"DKIM-Signature" not in send("bob@brand.example")


def test_a_tampered_message_fails_verification(send, mail_servers):
    publish(mail_servers.dns, dkim_key_add(domain="brand.example"))
    data = send("bob@brand.example")
    assert not verify(data.replace(b"Hello, signed", b"Hello, forged"), mail_servers.dns)


def test_a_broken_key_is_logged_and_the_mail_still_goes_out(send, caplog):
    dkim_key_add(domain="brand.example")
    DkimKey.objects.filter(domain="brand.example").update(private_key="not a key")
    from tracking.delivery.dkim import dkim_key_cache

    dkim_key_cache.clear()  # as after a minute: the worker reads the keys again
    with caplog.at_level(logging.ERROR):
        data = send("bob@brand.example")
    assert b"DKIM-Signature" not in data
    assert "DKIM signing as iovox._domainkey.brand.example failed" in caplog.text


def test_the_command_generates_a_key_and_prints_its_txt_record():
    out = io.StringIO()
    call_command("add_dkim_key", "Brand.Example", "--selector", "s1", stdout=out)
    key = DkimKey.objects.get(domain="brand.example")
    assert key.selector == "s1" and key.is_active
    assert "BEGIN PRIVATE KEY" in key.private_key
    assert f's1._domainkey.brand.example. IN TXT "v=DKIM1; k=rsa; p={key.public_key[:20]}' in (
        out.getvalue()
    )
    assert all(len(chunk) <= 257 for chunk in key.dns_txt_strings.split(" "))


def test_the_command_takes_an_existing_key_and_replaces_the_domains_key(tmp_path):
    call_command("add_dkim_key", "brand.example", stdout=io.StringIO())
    pem, public = dkim_key_generate()
    (tmp_path / "key.pem").write_text(pem)
    call_command(
        "add_dkim_key", "brand.example", "--private-key", str(tmp_path / "key.pem"),
        stdout=io.StringIO(),
    )  # fmt: skip
    [key] = DkimKey.objects.all()
    assert key.public_key == public


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


def test_admin_adds_a_key_shows_its_record_and_refuses_a_bad_one(admin_client):
    response = admin_client.post(
        "/admin/tracking/dkimkey/add/",
        {"domain": "brand.example", "selector": "s1", "private_key": ""},
        follow=True,
    )
    assert response.status_code == 200
    key = DkimKey.objects.get(domain="brand.example")
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


def test_forwarded_alias_mail_keeps_its_authors_signature_and_gets_ours(
    alice, mail_servers, settings
):
    """Our signature goes on top of the bytes as they leave; the author's stays untouched."""
    from tracking.services.messages import message_accept

    author_key = dkim_key_add(domain="author.example", selector="a1")
    publish(mail_servers.dns, author_key)
    original = (
        b"From: Author <me@author.example>\r\nTo: alias@iovox.email\r\nSubject: Hi\r\n"
        b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <orig-1@author.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlain words, no HTML.\r\n"
    )
    signed_by_author = dkim.sign(
        original, b"a1", b"author.example", author_key.private_key.encode(),
        canonicalize=(b"relaxed", b"relaxed"),
    ) + original  # fmt: skip
    author_key.delete()  # we no longer hold the author's key: only our bounce domain's
    ours = dkim_key_add(domain=settings.BOUNCE_DOMAIN)
    publish(mail_servers.dns, ours)
    link = LinkFactory(account=alice.account, node__account=alice.account)
    message_accept(
        account=alice.account, link=link, sender_address="me@author.example",
        sender_name="Author", recipient_address="dest@example.net", recipient_name="Dest",
        subject="Hi", text_content="Plain words, no HTML.", html_content="",
        direction="alias", source_mime=signed_by_author,
    )  # fmt: skip
    deliver_due()
    data = mail_servers.mx.received[-1].data
    assert data.count(b"DKIM-Signature:") == 2
    assert signature_tags(data)["d"] == settings.BOUNCE_DOMAIN  # the first, ours
    assert verify(data, mail_servers.dns)  # ours
    assert verify(data, mail_servers.dns, index=1)  # the author's, still good
    assert data.endswith(signed_by_author)
