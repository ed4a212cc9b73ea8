"""Domain checks: does DNS say what mail receivers need, for mail from and to our domains?

The domains: our own (alias: ALIAS_DOMAIN and the alias domains; proxy: the proxy domains;
bounce: BOUNCE_DOMAIN), each customer domain we hold a DKIM key for (signing), and SPF_INCLUDE
when it is set (spf). Which records each must publish, and how each is judged:
conversations/domain_records.py.

Our own domains get a DKIM key here if they have none: ALIAS_DOMAIN and BOUNCE_DOMAIN, which
are settings, not rows, get theirs at the first check (the others when they are added).

The worker runs the check hourly (tracking/schedules.py) within RUN_TIME_LIMIT, the domains
checked longest ago first; `manage.py check_domains` and the admin run it at once. All of one
domain's lookups end within DOMAIN_TIME_LIMIT. Results are kept in DomainCheck, one row a
domain.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict

from django.conf import settings
from django.utils import timezone

from conversations.domain_records import (
    ALIAS,
    BOUNCE,
    EVERY_KIND,
    MISSING,
    OK,
    OURS,
    PROXY,
    SIGNED,
    SIGNING,
    SPF_KIND,
    UNKNOWN,
    WRONG,
    Finding,
    dkim_check,
    dmarc_check,
    mx_check,
    spf_check,
)
from conversations.models import DomainCheck, ProxyDomain
from tracking.models import AliasDomain, DkimKey
from tracking.services.dkim_keys import InvalidKey, dkim_key_ensure

log = logging.getLogger(__name__)

# A check's status is its worst record's.
SEVERITY = [WRONG, MISSING, UNKNOWN, OK]
# What a finding shows of what DNS said, at most (a TXT record can be kilobytes long).
DETAIL_MAX = 1000
# All the lookups of one domain end within this many seconds (RFC 7208 allows SPF alone 20).
DOMAIN_TIME_LIMIT = 20.0
# The scheduled run stops starting domains after this many seconds (the worker kills a task
# after 300); the rest come first next time.
RUN_TIME_LIMIT = 240.0
CHECKS: list[tuple[str, frozenset[str], Callable[[str, set[str], float], list[Finding]]]] = [
    ("mx", OURS, mx_check),
    ("spf", EVERY_KIND, spf_check),
    ("dkim", SIGNED, dkim_check),
    ("dmarc", SIGNED, dmarc_check),
]


class NotOurDomain(ValueError):
    pass


def domains_to_check() -> dict[str, set[str]]:
    """Every domain to check, with its kinds (iovox.email is both alias and bounce by default)."""
    kinds: dict[str, set[str]] = defaultdict(set)
    kinds[settings.BOUNCE_DOMAIN.lower()].add(BOUNCE)
    kinds[settings.ALIAS_DOMAIN.lower()].add(ALIAS)
    for domain in AliasDomain.objects.values_list("domain", flat=True):
        kinds[domain].add(ALIAS)
    for domain in ProxyDomain.objects.values_list("domain", flat=True):
        kinds[domain].add(PROXY)
    signing = DkimKey.objects.exclude(status=DkimKey.Status.RETIRED).values_list("domain")
    for (domain,) in signing.distinct().order_by():
        if domain not in kinds:
            kinds[domain].add(SIGNING)
    if settings.SPF_INCLUDE:
        kinds[settings.SPF_INCLUDE].add(SPF_KIND)
    return dict(kinds)


def domains_check(
    *, domains: Iterable[str] | None = None, time_limit: float | None = None
) -> list[DomainCheck]:
    """Check `domains` (each one of ours or a signing domain; NotOurDomain otherwise), or all of
    them: then rows of domains no longer ours go, and with a `time_limit` (seconds) the run
    starts no domain after it, those checked longest ago going first."""
    every = domains_to_check()
    _keys_ensure([domain for domain, kinds in every.items() if kinds & OURS])
    if domains is None:
        DomainCheck.objects.exclude(domain__in=every).delete()
        chosen = _oldest_first(every)
    else:
        chosen = [domain.strip().lower().rstrip(".") for domain in domains]
        if unknown := [domain for domain in chosen if domain not in every]:
            raise NotOurDomain(f"not one of our domains or signing domains: {', '.join(unknown)}")
    end = None if time_limit is None else time.monotonic() + time_limit
    checked = []
    for domain in chosen:
        if end is not None and time.monotonic() > end:
            log.warning("domain checks: time is up; %d domains wait for the next run",
                        len(chosen) - len(checked))  # fmt: skip
            break
        checked.append(domain_check(domain=domain, kinds=every[domain]))
    return checked


def domain_check(*, domain: str, kinds: set[str]) -> DomainCheck:
    """Check one domain's records over DNS and store what was found."""
    deadline = time.monotonic() + DOMAIN_TIME_LIMIT
    statuses, findings = {}, []
    for name, applies_to, check in CHECKS:
        found = check(domain, kinds, deadline) if kinds & applies_to else []
        statuses[name] = min((f.status for f in found), key=SEVERITY.index, default="")
        findings += found
    row, _ = DomainCheck.objects.update_or_create(
        domain=domain,
        defaults={
            "kinds": ", ".join(sorted(kinds)),
            **statuses,
            "findings": [_shown(finding) for finding in findings],
            "checked_at": timezone.now(),
        },
    )
    return row


def _shown(finding: Finding) -> dict[str, str]:
    """A finding as stored and shown: what DNS said (anyone's TXT record may hold anything)
    without control characters, which a terminal would obey, and at most DETAIL_MAX long."""
    fields = asdict(finding)
    detail = "".join(c if c.isprintable() else "?" for c in fields["detail"])
    fields["detail"] = detail if len(detail) <= DETAIL_MAX else detail[: DETAIL_MAX - 1] + "…"
    return fields


def _oldest_first(every: dict[str, set[str]]) -> list[str]:
    checked = dict(
        DomainCheck.objects.filter(domain__in=every)
        .order_by("checked_at")
        .values_list("domain", "checked_at")
    )
    never = sorted(domain for domain in every if domain not in checked)
    return never + [domain for domain in checked]


def _keys_ensure(domains: list[str]) -> None:
    """A key for each of our domains that has none signing or waiting for its record."""
    keyed = DkimKey.objects.filter(
        domain__in=domains, status__in=[DkimKey.Status.PENDING, DkimKey.Status.ACTIVE]
    )
    for domain in set(domains) - set(keyed.values_list("domain", flat=True)):
        try:
            dkim_key_ensure(domain=domain)
        except InvalidKey as exc:  # a setting that is not a domain name: its DKIM check says so
            log.warning("no DKIM key for %s: %s", domain, exc)
