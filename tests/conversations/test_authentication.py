"""inbound_authenticate, the one function routing (and later smtpd) asks about a message's
sender: SPF, DKIM and DMARC against records served by the loopback DNS server."""

from __future__ import annotations

import pytest

from conversations.inbound.authentication import MAX_SIGNATURES, inbound_authenticate
from tests.conversations.test_proxy_trust import dealer_key, message, signed

SHOP = "my-shop.example.net"  # a hyphen: authheaders would check DMARC for "my"


@pytest.fixture
def dns(mail_servers):
    return mail_servers.dns


def verdict(raw: bytes, *, mail_from: str = f"sales@{SHOP}", ip: str = "127.0.0.1"):
    return inbound_authenticate(raw=raw, ip=ip, mail_from=mail_from, helo="mail.client.example")


def test_spf_asks_the_configured_resolver(dns):
    """pyspf resolves through our DNS_NAMESERVERS (the one hook set on it): breaks if pyspf
    stops calling spf.DNSLookup."""
    dns.add_spf(SHOP, "v=spf1 include:_spf.mailer.example.net -all")
    dns.add_spf("_spf.mailer.example.net", "v=spf1 ip4:127.0.0.0/8 -all")
    result = verdict(message(sender=f"sales@{SHOP}", to="p@proxy.example"))
    assert (result.spf, result.spf_domain) == ("pass", SHOP)
    assert ("_spf.mailer.example.net", "TXT") in dns.queries


def test_dmarc_of_a_hyphenated_domain_is_its_own(dns):
    dns.add_spf(SHOP, "v=spf1 ip4:192.0.2.1 -all").add_dmarc(SHOP, "v=DMARC1; p=reject")
    result = verdict(message(sender=f"sales@{SHOP}", to="p@proxy.example"))
    assert (result.dmarc, result.dmarc_disposition) == ("fail", "reject")
    assert result.authentication_results.endswith(f"dmarc=fail (dis=reject) header.from={SHOP}")


def test_the_organizational_domains_policy_applies_to_a_subdomain(dns):
    dns.add_dmarc("example.net", "v=DMARC1; p=none; sp=quarantine")
    sender = "a@news.example.net"
    result = verdict(message(sender=sender, to="p@proxy.example"), mail_from=sender)
    assert (result.dmarc, result.dmarc_disposition) == ("fail", "quarantine")


def test_a_signature_by_a_subdomain_aligns_with_the_from_domain(dns):
    dns.add_dkim(f"mail.{SHOP}", "sel1", dealer_key()[1]).add_dmarc(SHOP, "v=DMARC1; p=reject")
    raw = signed(message(sender=f"sales@{SHOP}", to="p@proxy.example"), domain=f"mail.{SHOP}")
    result = verdict(raw, mail_from="bounce@elsewhere.example")
    assert (result.dkim, result.dmarc) == ("pass", "pass")
    assert result.vouches_for(f"sales@{SHOP}").trusted is False  # the envelope is a stranger's
    assert result.vouches_for(f"sales@{SHOP}").reason.startswith("the envelope sender")


def test_a_crafted_signature_cannot_write_results_of_its_own(dns):
    raw = message(sender=f"sales@{SHOP}", to="p@proxy.example")
    forged = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=evil.example dmarc=pass; s=x(y)z; h=from;"
        b" bh=AAAA; b=AAAA\r\n"
    )
    result = verdict(forged + raw)
    assert result.dkim == "fail"
    assert "dmarc=pass" not in result.authentication_results
    assert "dkim=fail header.d=evil.exampledmarcpass header.s=xyz" in (
        result.authentication_results
    )


def test_only_the_first_signatures_are_checked(dns):
    raw = message(sender=f"sales@{SHOP}", to="p@proxy.example")
    for index in range(MAX_SIGNATURES + 3):
        raw = signed(raw, domain=f"d{index}.example")
    assert len(verdict(raw).signatures) == MAX_SIGNATURES


def test_a_dns_timeout_is_a_temperror_never_a_pass_or_a_fail(dns, settings):
    settings.DNS_TIMEOUT = 0.2
    dns.timeouts.update({SHOP, f"sel1._domainkey.{SHOP}", f"_dmarc.{SHOP}"})
    dns.add_dkim(SHOP, "sel1", dealer_key()[1])
    result = verdict(signed(message(sender=f"sales@{SHOP}", to="p@proxy.example"), domain=SHOP))
    assert (result.spf, result.dkim, result.dmarc) == ("temperror", "temperror", "temperror")
    trust = result.vouches_for(f"sales@{SHOP}")
    assert (trust.trusted, trust.temporary) == (False, True)


@pytest.mark.parametrize(
    "from_header",
    [
        f"From: a@{SHOP}\r\nFrom: b@{SHOP}\r\n",
        f"From: a@{SHOP}, b@evil.example\r\n",
        "From: nobody\r\n",
    ],
)
def test_a_from_that_is_not_one_address_is_a_permerror(dns, from_header):
    raw = (from_header + "Subject: x\r\n\r\nbody\r\n").encode()
    result = verdict(raw)
    assert (result.dmarc, result.from_address) == ("permerror", "")
    assert result.vouches_for(f"a@{SHOP}").trusted is False


@pytest.mark.parametrize("ip", ["", "unknown", "999.1.1.1"])
def test_without_a_client_address_spf_is_neutral(dns, ip):
    dns.add_spf(SHOP, "v=spf1 ip4:127.0.0.1 -all")
    result = verdict(message(sender=f"sales@{SHOP}", to="p@proxy.example"), ip=ip)
    assert result.spf == "neutral"
    assert result.vouches_for(f"sales@{SHOP}").trusted is False


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"DKIM-Signature: \x00\r\n\r\n",
        b"DKIM-Signature: v=1; d=\xff\xfe; s=a\r\nFrom: x@\xff.example\r\n\r\n",
        "From: a@bücher.example\r\n\r\n".encode(),
        b"From: a@" + b"x" * 300 + b".example\r\n\r\n",
    ],
)
def test_hostile_messages_never_raise(dns, raw):
    result = verdict(raw, mail_from="a@" + "y" * 70 + ".example")
    assert result.authentication_results.startswith("localhost; spf=")
    assert "\n" not in result.authentication_results
