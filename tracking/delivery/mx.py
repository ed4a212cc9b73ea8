"""Where mail for a domain goes: MX lookup with dnspython.

Four outcomes (RFC 5321 section 5.1, RFC 7505): MX records, sorted by preference; no MX record
at all, which means the domain itself is the MX ("implicit MX", via its A/AAAA records); a null
MX or a domain that does not exist, which means no mail can be delivered (`noMxRecord`); and a
DNS failure or timeout, which is temporary (`queued`).
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
from django.conf import settings


class MxOutcome(enum.Enum):
    HOSTS = "hosts"
    NO_MX = "no_mx"
    TEMPORARY = "temporary"


@dataclass(frozen=True)
class MxLookup:
    outcome: MxOutcome
    hosts: list[str] = field(default_factory=list)
    detail: str = ""


def parse_nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    """ "ip", "ip:port", "[v6]:port" or a bare IPv6 address."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]")
        return dns.nameserver.Do53Nameserver(host, int(port.lstrip(":") or 53))
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return dns.nameserver.Do53Nameserver(host, int(port))
    return dns.nameserver.Do53Nameserver(spec, 53)


@functools.lru_cache(maxsize=8)
def _resolver(nameservers: tuple[str, ...], timeout: float) -> dns.resolver.Resolver:
    if nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [parse_nameserver(spec) for spec in nameservers]
    else:
        resolver = dns.resolver.Resolver()
    resolver.cache = dns.resolver.LRUCache(10_000)
    resolver.timeout = timeout
    resolver.lifetime = timeout
    return resolver


def resolver() -> dns.resolver.Resolver:
    return _resolver(tuple(settings.DNS_NAMESERVERS), float(settings.DNS_TIMEOUT))


def mx_lookup(domain: str) -> MxLookup:
    try:
        answer = resolver().resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        return MxLookup(MxOutcome.NO_MX, detail=f"{domain} does not exist (NXDOMAIN)")
    except dns.resolver.NoAnswer:
        return _implicit_mx(domain)
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException) as e:
        return MxLookup(MxOutcome.TEMPORARY, detail=f"MX lookup for {domain} failed: {e}")
    records = sorted(answer, key=lambda r: (r.preference, str(r.exchange)))
    hosts = [str(r.exchange).rstrip(".").lower() for r in records]
    if not any(hosts):
        # RFC 7505: a single MX of "." says the domain accepts no mail.
        return MxLookup(MxOutcome.NO_MX, detail=f"{domain} has a null MX record")
    return MxLookup(MxOutcome.HOSTS, hosts=[h for h in hosts if h])


def _implicit_mx(domain: str) -> MxLookup:
    addresses = host_addresses(domain)
    if addresses is None:
        return MxLookup(MxOutcome.TEMPORARY, detail=f"address lookup for {domain} failed")
    if not addresses:
        return MxLookup(MxOutcome.NO_MX, detail=f"{domain} has no MX and no A/AAAA record")
    return MxLookup(MxOutcome.HOSTS, hosts=[domain])


def host_addresses(host: str) -> list[str] | None:
    """IPv4 then IPv6 addresses of an MX host; None when DNS failed (not merely empty)."""
    addresses: list[str] = []
    failed = False
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            addresses += [r.address for r in resolver().resolve(host, rdtype)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException:
            failed = True
    if failed and not addresses:
        return None
    return addresses
