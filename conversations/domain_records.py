"""What a domain must publish, judged record by record over DNS (conversations/domains.py
says which domains, and keeps the results):

    check   for                            ok when
    MX      alias, proxy, bounce           every MX record names SMTPD_PUBLIC_HOST
    SPF     all                            its one SPF record passes for every address in
                                           SENDING_IPS, evaluated by pyspf as a receiver would
    DKIM    alias, proxy, bounce, signing  the TXT record of each key not retired publishes
                                           that very key
    DMARC   alias, proxy, bounce, signing  one valid DMARC record applies (its own, or its
                                           organizational domain's), read by `dmarc`

Each record is ok, missing, wrong or unknown ("could not check": DNS did not answer in time,
or a setting it needs is not given): never ok by default. Each Finding carries the exact
record to publish. The DKIM check also moves keys along (tracking/services/dkim_keys.py): a
pending key whose record is seen starts signing, and a replaced key whose overlap is over is
retired.

Lookups go to DNS_NAMESERVERS, each bounded by DNS_TIMEOUT and all of a domain's by the
deadline given. A domain's own records are asked afresh each time, so a record just published
is seen at once; pyspf's lookups of the domains an SPF record includes go through the delivery
resolver's cache (tracking/delivery/mx.py), which keeps an answer for its TTL.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass

import dkim.util
import dmarc
import dmarc.psl
import dns.exception
import dns.resolver
import spf
from django.conf import settings

# Importing it also points pyspf's lookups at our resolvers (its spf.DNSLookup hook).
from conversations.inbound.authentication import DnsUnavailable
from conversations.models import DomainCheck
from tracking.delivery.mx import parse_nameserver
from tracking.models import DkimKey
from tracking.services.dkim_keys import dkim_key_activate, dkim_keys_overlap_ended

log = logging.getLogger(__name__)

ALIAS, PROXY, BOUNCE, SIGNING, SPF_KIND = "alias", "proxy", "bounce", "signing", "spf"
OURS = frozenset({ALIAS, PROXY, BOUNCE})
SIGNED = OURS | {SIGNING}
EVERY_KIND = SIGNED | {SPF_KIND}

OK = DomainCheck.Status.OK
MISSING = DomainCheck.Status.MISSING
WRONG = DomainCheck.Status.WRONG
UNKNOWN = DomainCheck.Status.UNKNOWN

# What we ask a domain with no DMARC record to publish: failing mail quarantined, relaxed
# alignment (our signatures are by the From domain; the envelope is on BOUNCE_DOMAIN).
DMARC_RECORD = "v=DMARC1; p=quarantine; adkim=r; aspf=r"


@dataclass(frozen=True)
class Finding:
    """One record looked at: its DNS name, what was found, and the record to publish (the one
    expected: publish it where the status is not ok)."""

    check: str  # mx | spf | dkim | dmarc
    status: str
    name: str
    detail: str
    record: str = ""


# --- DNS --------------------------------------------------------------------------------------


def _resolver() -> dns.resolver.Resolver:
    """The configured resolvers, without the delivery resolver's cache: a record published a
    moment ago (or a missing one cached as missing) is seen at the next check."""
    if not settings.DNS_NAMESERVERS:
        return dns.resolver.Resolver()
    fresh = dns.resolver.Resolver(configure=False)
    fresh.nameservers = [parse_nameserver(spec) for spec in settings.DNS_NAMESERVERS]
    return fresh


def _lookup(name: str, rdtype: str, deadline: float) -> list:
    """The records of `name`: [] when there are none (NXDOMAIN, no data, a name that cannot
    exist); DnsUnavailable when no server answered in time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DnsUnavailable(f"{name} {rdtype}: the time for this domain's lookups is up")
    try:
        answer = _resolver().resolve(
            name, rdtype, search=False, lifetime=min(float(settings.DNS_TIMEOUT), remaining)
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsUnavailable(f"{name} {rdtype}: {exc}") from None
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return []
    return list(answer)


def _txt(name: str, deadline: float) -> list[str]:
    records = _lookup(name, "TXT", deadline)
    return [b"".join(record.strings).decode("utf-8", "replace") for record in records]


def _txt_line(name: str, value: str) -> str:
    """A zone file line: the value in quoted strings of at most 255 characters."""
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    return f"{name}. IN TXT {chunks}"


# --- MX ---------------------------------------------------------------------------------------


def mx_check(domain: str, kinds: set[str], deadline: float) -> list[Finding]:
    host = settings.SMTPD_PUBLIC_HOST

    def finding(status: str, detail: str) -> list[Finding]:
        record = f"{domain}. IN MX 10 {host}." if host else ""
        return [Finding("mx", status, domain, detail, record)]

    if not host:
        return finding(UNKNOWN, "SMTPD_PUBLIC_HOST (our inbound SMTP server's name) is not set")
    try:
        records = _lookup(domain, "MX", deadline)
    except DnsUnavailable as exc:
        return finding(UNKNOWN, f"DNS did not answer: {exc}")
    hosts = [
        str(r.exchange).rstrip(".").lower()
        for r in sorted(records, key=lambda r: (r.preference, str(r.exchange)))
    ]
    if not hosts:
        return finding(MISSING, "no MX record: mail to this domain does not reach us")
    if hosts == [""]:
        return finding(WRONG, "a null MX record (RFC 7505) says this domain takes no mail")
    others = [h or "." for h in hosts if h != host]
    if others:
        return finding(WRONG, f"MX names {', '.join(others)}: mail sent there does not reach us")
    return finding(OK, f"MX {host}")


# --- SPF --------------------------------------------------------------------------------------


def spf_check(domain: str, kinds: set[str], deadline: float) -> list[Finding]:
    addresses, problem = _sending_ips()
    # SPF_INCLUDE lists our addresses; every other domain includes it (or lists them too).
    if SPF_KIND in kinds or not settings.SPF_INCLUDE:
        mechanism = " ".join(f"ip{ip.version}:{ip}" for ip in addresses)
    else:
        mechanism = f"include:{settings.SPF_INCLUDE}"
    expected = f"v=spf1 {mechanism} -all" if mechanism else ""

    def finding(status: str, detail: str) -> list[Finding]:
        return [
            Finding("spf", status, domain, detail, _txt_line(domain, expected) if expected else "")
        ]

    if problem:
        return finding(UNKNOWN, problem)
    try:
        published = [r for r in _txt(domain, deadline) if _is_spf(r)]
    except DnsUnavailable as exc:
        return finding(UNKNOWN, f"DNS did not answer: {exc}")
    if not published:
        return finding(MISSING, "no SPF record: receivers cannot tell our servers may send for it")
    if len(published) > 1:
        shown = " | ".join(published)
        return finding(WRONG, f"{shown}: several SPF records are an error (RFC 7208 4.5)")
    record = published[0]
    results = {str(ip): _spf_result(domain, record, str(ip), deadline) for ip in addresses}
    if all(result == "pass" for result in results.values()):
        return finding(OK, f"{record}: passes for {', '.join(results)}")
    if "temperror" in results.values():
        return finding(UNKNOWN, f"{record}: DNS did not answer while evaluating it")
    failing = ", ".join(f"{result} for {ip}" for ip, result in results.items() if result != "pass")
    return finding(
        WRONG,
        f"{record}: {failing}. Publish the record below, or, if other servers send for this "
        f"domain too, add {mechanism} before the record's all.",
    )


def _is_spf(record: str) -> bool:
    """RFC 7208 section 4.5: an SPF record starts with exactly "v=spf1" and a space, or is
    just that."""
    return record.lower() == "v=spf1" or record.lower().startswith("v=spf1 ")


def _sending_ips() -> tuple[list[ipaddress.IPv4Address | ipaddress.IPv6Address], str]:
    """SENDING_IPS as addresses, and what is wrong with the setting ("" when nothing)."""
    if not settings.SENDING_IPS:
        return [], "SENDING_IPS (the addresses our mail leaves from) is not set"
    addresses = []
    for value in settings.SENDING_IPS:
        try:
            addresses.append(ipaddress.ip_address(value.strip()))
        except ValueError:
            return [], f"SENDING_IPS holds {value!r}, which is not an IP address"
    return addresses, ""


def _spf_result(domain: str, record: str, ip: str, deadline: float) -> str:
    """pyspf's result for mail from `ip` with an envelope sender on `domain` that publishes
    `record` (looked up afresh: pyspf's own lookups, of the domains it includes, may come from
    the delivery resolver's cache)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return "temperror"
    try:
        result, _code, _explanation = spf.query(
            i=ip,
            s=f"postmaster@{domain}",
            h=domain,
            timeout=min(float(settings.DNS_TIMEOUT), remaining),
            querytime=remaining,
        ).check(spf=record)
    except Exception:  # noqa: BLE001 - whatever pyspf trips on, this check is not ok
        log.warning("SPF evaluation of %s for %s failed", domain, ip, exc_info=True)
        return "temperror"
    return result


# --- DKIM -------------------------------------------------------------------------------------


def dkim_check(domain: str, kinds: set[str], deadline: float) -> list[Finding]:
    findings = [
        Finding("dkim", OK, key.dns_name, "replaced and no longer needed: remove this record")
        for key in dkim_keys_overlap_ended(domain=domain)
    ]
    keys = DkimKey.objects.filter(domain=domain)
    # Pending keys first: one that is published becomes active and its predecessor retiring.
    for key in keys.filter(status=DkimKey.Status.PENDING):
        status, detail = _dkim_record(key, deadline)
        if status == OK and dkim_key_activate(key=key):
            detail = "published: this key signs from now on"
        elif status != OK:
            detail += ". A new key: it signs once this record is published"
        findings.append(Finding("dkim", status, key.dns_name, detail, key.dns_record))
    for key in keys.filter(status__in=[DkimKey.Status.ACTIVE, DkimKey.Status.RETIRING]):
        status, detail = _dkim_record(key, deadline)
        if key.status == DkimKey.Status.RETIRING:
            detail += f". Replaced: keep this record until {key.retire_after:%Y-%m-%d %H:%M} UTC"
        findings.append(Finding("dkim", status, key.dns_name, detail, key.dns_record))
    if not any(f.record for f in findings):
        findings.append(
            Finding("dkim", MISSING, domain, f"no DKIM key: `manage.py rotate_dkim_key {domain}`")
        )
    return findings


def _dkim_record(key: DkimKey, deadline: float) -> tuple[str, str]:
    """Whether DNS publishes `key` at its selector, and what it says."""
    try:
        records = _txt(key.dns_name, deadline)
    except DnsUnavailable as exc:
        return UNKNOWN, f"DNS did not answer: {exc}"
    if not records:
        return MISSING, "no TXT record"
    for record in records:
        try:
            tags = dkim.util.parse_tag_value(record.encode())
        except dkim.util.InvalidTagValueList:
            continue
        public = b"".join(tags.get(b"p", b"").split()).decode("ascii", "replace")
        if public == key.public_key and tags.get(b"k", b"rsa").lower() == b"rsa":
            return OK, "publishes this key"
    return WRONG, "the TXT record there does not publish this key"


# --- DMARC ------------------------------------------------------------------------------------


def dmarc_check(domain: str, kinds: set[str], deadline: float) -> list[Finding]:
    """RFC 7489 section 6.6.3: the domain's own record, else its organizational domain's."""
    record_line = _txt_line(f"_dmarc.{domain}", DMARC_RECORD)

    def finding(status: str, detail: str) -> list[Finding]:
        return [Finding("dmarc", status, f"_dmarc.{domain}", detail, record_line)]

    org = dmarc.psl.get_public_suffix(domain) or domain
    for name in [domain] + ([org] if org != domain and "." in org else []):
        try:
            records = [r for r in _txt(f"_dmarc.{name}", deadline) if r[:8].lower() == "v=dmarc1"]
        except DnsUnavailable as exc:
            return finding(UNKNOWN, f"DNS did not answer: {exc}")
        if len(records) > 1:
            return finding(
                WRONG, f"_dmarc.{name} has {len(records)} DMARC records: receivers use none"
            )
        if records:
            try:
                policy = dmarc.DMARC().parse_record(records[0], domain=domain)
            except (dmarc.Error, ValueError) as exc:
                return finding(WRONG, f"{records[0]!r} is not a valid DMARC record: {exc}")
            subdomain = name != domain and policy.sp is not dmarc.DMARCDisposition.UNSPECIFIED
            applied = policy.sp if subdomain else policy.p
            source = "" if name == domain else f" (the record of {name})"
            return finding(OK, f"{records[0]}{source}: p={applied.value}")
    return finding(MISSING, "no DMARC record")
