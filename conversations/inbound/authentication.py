"""Who wrote an inbound message, judged by the evidence mail receivers trust.

- SPF (pyspf): may the client's IP send mail for the envelope sender's domain (MAIL FROM, or
  the HELO name for a null sender)?
- DKIM (dkimpy): which domains signed the message, and do their signatures hold?
- DMARC (the `dmarc` package): what the From domain's published policy makes of the two.

`inbound_authenticate` computes all three and returns a `Verdict`: the results, the
Authentication-Results header value we computed (RFC 8601), and `Verdict.vouches_for`, the rule
that says whether the evidence shows a given address wrote the message (docs/inbound.md).

Every lookup goes to the configured resolvers (DNS_NAMESERVERS, each lookup bounded by
DNS_TIMEOUT and all of a message's by TIME_LIMIT). A lookup that fails (a timeout, SERVFAIL) is
a `temperror`: never a pass, never a fail.

authheaders would combine the three, but its DMARC reads the From and MAIL FROM domains with a
pattern that stops at the first hyphen ("a@my-shop.com" is checked as "my"), so the `dmarc`
package evaluates the policy here, on domains we read ourselves.
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import logging
import re
import time
from dataclasses import dataclass

import dkim
import dmarc
import dmarc.psl
import dns.exception
import dns.resolver
import spf
from authres import (
    AuthenticationResultsHeader,
    DKIMAuthenticationResult,
    SPFAuthenticationResult,
)
from authres.arc import ARCAuthenticationResult
from authres.dmarc import DMARCAuthenticationResult
from django.conf import settings

from conversations.inbound.raw_mail import ParsedMessage, split_message
from tracking.addresses import address_domain
from tracking.delivery.mx import resolver

log = logging.getLogger(__name__)

# All the lookups of one message (SPF's up to ten, the signatures' keys, the DMARC record) end
# within this many seconds: RFC 7208 section 4.6.4 suggests 20 for SPF alone.
TIME_LIMIT = 20.0
# Signatures checked on one message, topmost first: each costs a lookup and a body hash, and a
# sender can add any number.
MAX_SIGNATURES = 5

PASS, FAIL, NONE, TEMPERROR, PERMERROR = "pass", "fail", "none", "temperror", "permerror"


class DnsUnavailable(Exception):
    """A lookup had no answer (a timeout, SERVFAIL, the time limit): try again later."""


@dataclass(frozen=True)
class Signature:
    """One DKIM signature: the domain and selector it names, and whether it holds."""

    domain: str
    selector: str
    result: str  # pass | fail | temperror | permerror


@dataclass(frozen=True)
class Trust:
    """Whether the evidence shows an address wrote the message: `trusted`, or refused
    (`temporary` when a DNS failure kept the answer from us), and why."""

    trusted: bool
    temporary: bool
    reason: str


@dataclass(frozen=True)
class Verdict:
    mail_from: str  # the envelope sender ("" for a null sender)
    from_address: str  # the one address of the one From header; "" when there is not one
    spf: str  # pass | fail | softfail | neutral | none | temperror | permerror
    spf_domain: str  # the domain SPF checked: MAIL FROM's, or the HELO name's
    signatures: tuple[Signature, ...]
    dmarc: str  # pass | fail | none | temperror | permerror
    dmarc_disposition: str  # what the policy asks for this message: none | quarantine | reject
    from_domain: str
    authentication_results: str  # our Authentication-Results header value
    arc: str = NONE  # the chain of ARC sets on arrival: pass | fail | none (dkimpy's arc_verify)

    def as_json(self) -> dict:
        """The verdicts as stored on the InboundMessage (`authentication`) and shown by the
        API and the portal."""
        return {
            "spf": self.spf,
            "spf_domain": self.spf_domain,
            "mail_from": self.mail_from,
            "dkim": self.dkim,
            "signatures": [
                {"domain": s.domain, "selector": s.selector, "result": s.result}
                for s in self.signatures
            ],
            "dmarc": self.dmarc,
            "dmarc_disposition": self.dmarc_disposition,
            "from_address": self.from_address,
            "from_domain": self.from_domain,
            "arc": self.arc,
            "authentication_results": self.authentication_results,
        }

    @classmethod
    def from_json(cls, data: dict) -> Verdict:
        """The Verdict `as_json` stored."""
        return cls(
            mail_from=data.get("mail_from", ""),
            from_address=data.get("from_address", ""),
            spf=data.get("spf", NONE),
            spf_domain=data.get("spf_domain", ""),
            signatures=tuple(
                Signature(s.get("domain", ""), s.get("selector", ""), s.get("result", NONE))
                for s in data.get("signatures", [])
            ),
            dmarc=data.get("dmarc", NONE),
            dmarc_disposition=data.get("dmarc_disposition", ""),
            from_domain=data.get("from_domain", ""),
            authentication_results=data.get("authentication_results", ""),
            arc=data.get("arc", NONE),
        )

    @property
    def dns_failed(self) -> bool:
        """A lookup failed where its answer could change the DMARC outcome."""
        if self.dmarc == PASS:
            return False
        return TEMPERROR in (self.spf, self.dmarc, self.dkim)

    @property
    def dkim(self) -> str:
        """One word for the signatures: pass when one holds, else the likeliest to change."""
        results = {signature.result for signature in self.signatures}
        for result in (PASS, TEMPERROR, FAIL, PERMERROR):
            if result in results:
                return result
        return NONE

    def vouches_for(self, address: str) -> Trust:
        """Whether the evidence shows `address` wrote this message. The From header names
        exactly that address and the envelope sender agrees (the same address, or one on
        the same organizational domain: a bounce address); and SPF passes for the envelope
        sender, or a signature by the address's domain holds (DMARC's relaxed alignment).

        A domain that publishes neither an SPF record nor a DMARC record, and whose
        signature the message does not carry, cannot be checked: when the envelope sender is
        on that very domain, the agreement of the envelope and From is all there is, and it
        is taken. A DNS failure on the way is `temporary`: the answer may be yes once DNS
        answers."""
        address = address.strip().lower()
        domain = address.rpartition("@")[2]
        if self.from_address.lower() != address:
            shown = self.from_address or "no single From address"
            return Trust(False, False, f"the From header names {shown}, not {address}")
        envelope = self.mail_from.strip().lower()
        if envelope != address and not _aligned(domain, envelope.rpartition("@")[2]):
            return Trust(False, False, f"the envelope sender {envelope or '<>'} is not {address}'s")
        own_spf = _aligned(domain, self.spf_domain)
        own_signatures = [s for s in self.signatures if _aligned(domain, s.domain)]
        if own_spf and self.spf == PASS:
            return Trust(True, False, f"SPF pass for {self.spf_domain}")
        if any(signature.result == PASS for signature in own_signatures):
            return Trust(True, False, f"DKIM pass for {domain}")
        evidence = self._evidence(domain, own_signatures)
        could_pass = (own_spf and self.spf == TEMPERROR) or any(
            signature.result == TEMPERROR for signature in own_signatures
        )
        # Nothing of the domain's own to check, unless its DMARC record says it authenticates
        # its mail. (SPF `none` says so of the envelope's domain only: one on another domain,
        # even a subdomain, could have been picked for having no record.)
        unchecked = self.spf_domain == domain and self.spf == NONE and not own_signatures
        if could_pass or (unchecked and self.dmarc == TEMPERROR):
            return Trust(False, True, f"DNS lookups failed: {evidence}")
        if unchecked and self.dmarc == NONE:
            return Trust(True, False, f"{domain} publishes no SPF, DKIM or DMARC to check")
        return Trust(False, False, f"not authenticated for {domain}: {evidence}")

    def _evidence(self, domain: str, own_signatures: list[Signature]) -> str:
        signatures = ", ".join(f"{s.result} (d={s.domain})" for s in own_signatures)
        return (
            f"SPF {self.spf} for {self.spf_domain or 'no domain'}; "
            f"DKIM {signatures or f'none by {domain}'}; DMARC {self.dmarc}"
        )


def inbound_authenticate(*, raw: bytes, ip: str, mail_from: str, helo: str) -> Verdict:
    """SPF, DKIM and DMARC of a received message, as the SMTP session presented it: the
    client's `ip`, the envelope sender `mail_from` ("" for a null sender) and the `helo` name.
    Never raises on hostile input: what cannot be checked is a permerror."""
    deadline = time.monotonic() + TIME_LIMIT
    spf_result, spf_domain = _spf(ip=ip, mail_from=mail_from, helo=helo, deadline=deadline)
    signatures = _signatures(raw, deadline)
    from_address = _from_address(raw)
    from_domain = address_domain(from_address)
    dmarc_result, disposition = _dmarc(from_domain, spf_result, spf_domain, signatures, deadline)
    arc_result = _arc(raw, deadline)
    header = AuthenticationResultsHeader(
        authserv_id=_token(settings.SMTP_HELO_NAME),
        results=[
            SPFAuthenticationResult(
                result=spf_result,
                **{"smtp_mailfrom" if mail_from else "smtp_helo": _token(spf_domain)},
            ),
            *(
                DKIMAuthenticationResult(
                    result=s.result, header_d=_token(s.domain), header_s=_token(s.selector)
                )
                for s in signatures
            ),
            DMARCAuthenticationResult(
                result=dmarc_result,
                result_comment=f"dis={disposition}" if disposition else None,
                header_from=_token(from_domain),
            ),
            *([ARCAuthenticationResult(result=arc_result)] if arc_result != NONE else []),
        ],
    )
    return Verdict(
        mail_from=mail_from,
        from_address=from_address,
        spf=spf_result,
        spf_domain=spf_domain,
        signatures=tuple(signatures),
        dmarc=dmarc_result,
        dmarc_disposition=disposition,
        from_domain=from_domain,
        authentication_results=header.header_value(),
        arc=arc_result,
    )


# --- DNS --------------------------------------------------------------------------------------


def _resolve(name: str, rdtype: str, deadline: float) -> dns.resolver.Answer | None:
    """The answer for `name`, or None when there is none (NXDOMAIN, no data, a name that
    cannot exist); DnsUnavailable when no server answered in time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DnsUnavailable(f"{name}: the time limit for this message's lookups has passed")
    try:
        return resolver().resolve(
            name, rdtype, search=False, lifetime=min(float(settings.DNS_TIMEOUT), remaining)
        )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
        return None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsUnavailable(f"{name} {rdtype}: {exc}") from None
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None  # a name that is not a name (an empty or overlong label, bad IDNA)


def _txt(name: str, deadline: float) -> list[bytes]:
    answer = _resolve(name, "TXT", deadline)
    return [b"".join(record.strings) for record in answer] if answer else []


# --- SPF --------------------------------------------------------------------------------------


def _spf(*, ip: str, mail_from: str, helo: str, deadline: float) -> tuple[str, str]:
    """pyspf's result for the client IP and the envelope sender (or HELO), and the domain it
    checked."""
    domain = (mail_from.rpartition("@")[2] if mail_from else helo).strip().lower()
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return "neutral", domain  # no client address to check (not "none": nothing published)
    try:
        result, _code, _explanation = spf.query(
            i=ip,
            s=mail_from,
            h=helo,
            timeout=float(settings.DNS_TIMEOUT),
            querytime=max(deadline - time.monotonic(), 0.001),
        ).check()
    except Exception:  # noqa: BLE001 - hostile input must never stop routing
        log.warning("SPF check of %r from %s failed", mail_from, ip, exc_info=True)
        return PERMERROR, domain
    return result, domain


def _spf_dns_lookup(name: str, qtype: str, strict: bool = True, timeout: float = 20) -> list:
    """pyspf's DNS hook (spf.DNSLookup), answered by our resolver in the shape pyspf's own
    dnspython lookup gives: [((name, qtype), value), ...]."""
    try:
        answer = _resolve(name, qtype, time.monotonic() + timeout)
    except DnsUnavailable as exc:
        raise spf.TempError(f"DNS {exc}") from None
    if answer is None:
        return []
    values = {
        "A": lambda r: r.address,
        "AAAA": lambda r: r.address,
        "MX": lambda r: (r.preference, r.exchange),
        "PTR": lambda r: r.target.to_text(True),
        "TXT": lambda r: r.strings,
        "SPF": lambda r: r.strings,
    }
    value = values.get(qtype)
    return [((name, qtype), value(record)) for record in answer] if value else []


# pyspf resolves through this module-level function and offers no other hook; this is the one
# place we set it (test_spf_asks_the_configured_resolver breaks if pyspf stops calling it).
spf.DNSLookup = _spf_dns_lookup


# --- DKIM -------------------------------------------------------------------------------------


def _signatures(raw: bytes, deadline: float) -> list[Signature]:
    """dkimpy's verdict on each DKIM signature, topmost first (at most MAX_SIGNATURES)."""
    header_block, _ = split_message(raw)
    count = len(re.findall(rb"(?im)^dkim-signature[ \t]*:", header_block))
    if not count:
        return []

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = _txt(name.decode("ascii", "replace"), deadline)
        return records[0] if records else None

    try:
        verifier = dkim.DKIM(raw, timeout=float(settings.DNS_TIMEOUT))
    except Exception:  # noqa: BLE001 - a message dkimpy cannot read has no signature that holds
        return [Signature("", "", PERMERROR)]
    signatures = []
    for index in range(min(count, MAX_SIGNATURES)):
        verifier.signature_fields = {}
        try:
            result = PASS if verifier.verify(idx=index, dnsfunc=dnsfunc) else FAIL
        except DnsUnavailable:
            result = TEMPERROR
        except dkim.DKIMException:  # a body hash mismatch, a malformed signature or key
            result = FAIL
        except Exception:  # noqa: BLE001 - hostile input must never stop routing
            log.warning("DKIM check of signature %d failed", index, exc_info=True)
            result = PERMERROR
        fields = verifier.signature_fields or {}
        signatures.append(
            Signature(
                domain=_text(fields.get(b"d", b"")).lower(),
                selector=_text(fields.get(b"s", b"")),
                result=result,
            )
        )
    return signatures


# --- ARC --------------------------------------------------------------------------------------


def _arc(raw: bytes, deadline: float) -> str:
    """dkimpy's verdict on the chain of ARC sets the message arrived with (RFC 8617): none
    when it has none; temperror when a key lookup failed."""
    header_block, _ = split_message(raw)
    if not re.search(rb"(?im)^arc-seal[ \t]*:", header_block):
        return NONE

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        records = _txt(name.decode("ascii", "replace"), deadline)
        return records[0] if records else None

    try:
        result, _results, _comment = dkim.arc_verify(
            raw, dnsfunc=dnsfunc, timeout=float(settings.DNS_TIMEOUT)
        )
    except DnsUnavailable:
        return TEMPERROR
    except Exception:  # noqa: BLE001 - a chain dkimpy cannot read holds nothing
        return FAIL
    result = result.decode() if isinstance(result, bytes) else str(result)
    return result if result in (PASS, FAIL, NONE) else FAIL


# --- DMARC ------------------------------------------------------------------------------------


def _dmarc(
    from_domain: str,
    spf_result: str,
    spf_domain: str,
    signatures: list[Signature],
    deadline: float,
) -> tuple[str, str]:
    """(DMARC result, disposition) by the From domain's published policy."""
    if not from_domain:
        return PERMERROR, ""  # RFC 7489 section 6.6.1: no single From domain to judge
    try:
        record, org_domain = _dmarc_record(from_domain, deadline)
    except DnsUnavailable:
        return TEMPERROR, ""
    if record is None:
        return NONE, ""
    try:
        policy = dmarc.DMARCPolicy(
            record=record, domain=from_domain, org_domain=org_domain, publicsuffix=dmarc.psl
        )
        results: list[dmarc.AuthResult] = [
            dmarc.DKIM(s.domain, dmarc.DKIMResult(s.result)) for s in signatures if s.domain
        ]
        if spf_domain:
            results.append(dmarc.SPF(spf_domain, dmarc.SPFResult(spf_result)))
        try:
            policy.verify(auth_results=results)
        except dmarc.PolicyError:
            pass  # a failing message: policy.result says how
    except (dmarc.Error, ValueError):
        return PERMERROR, ""
    passed = policy.result.result is dmarc.DMARCResult.PASS
    return PASS if passed else FAIL, policy.result.disposition.value or NONE


def _dmarc_record(domain: str, deadline: float) -> tuple[str | None, str | None]:
    """The DMARC record that applies to `domain` and, when it is the organizational domain's,
    that domain (RFC 7489 section 6.6.3: the From domain's own record, else its
    organizational domain's; several records count as none)."""
    for name in dict.fromkeys([domain, _org_domain(domain)]):
        records = [r for r in _txt(f"_dmarc.{name}", deadline) if r[:8].lower() == b"v=dmarc1"]
        if len(records) == 1:
            return _text(records[0]), (name if name != domain else None)
    return None, None


def _from_address(raw: bytes) -> str:
    """The one address of the one From header; "" when there is not exactly one."""
    parsed = ParsedMessage.parse(raw)
    if parsed.header_count("from") != 1:
        return ""
    addresses = email.utils.getaddresses([parsed.header("from") or ""])
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        return ""
    return addresses[0][1].strip()


# --- helpers ----------------------------------------------------------------------------------


def _aligned(domain: str, other: str) -> bool:
    """DMARC's relaxed alignment (RFC 7489 section 3.1.1): the same organizational domain.
    (The `dmarc` package's own check also aligns a domain with any of its parents, "net"
    included: fine for its evaluation, too loose for deciding who wrote.)"""
    return bool(domain and other) and _org_domain(domain) == _org_domain(other)


@functools.lru_cache(maxsize=4096)
def _org_domain(domain: str) -> str:
    """The organizational domain by the public suffix list the `dmarc` package uses."""
    try:
        return (dmarc.psl.get_public_suffix(domain) or domain).lower()
    except Exception:  # noqa: BLE001 - a domain the suffix list cannot read is its own
        return domain.lower()


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]")


def _token(value: str) -> str:
    """A value of the Authentication-Results header: domain characters only, so a crafted
    d= tag or From domain can never add a result of its own."""
    return _NOT_TOKEN.sub("", value)[:253] or "unknown"
