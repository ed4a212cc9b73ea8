"""Proxy domains and conversations."""

from __future__ import annotations

from conversations.models import ProxyDomain
from tracking.models import Account


def proxy_domain_add(*, domain: str, account: Account | None = None) -> tuple[ProxyDomain, bool]:
    """Make a proxy domain shared (no account) or private to one account. Idempotent: an
    existing domain is moved to the given sharing."""
    proxy_domain, created = ProxyDomain.objects.get_or_create(
        domain=domain.strip().lower(), defaults={"account": account}
    )
    if not created and proxy_domain.account_id != (account.pk if account else None):
        proxy_domain.account = account
        proxy_domain.save(update_fields=["account"])
    return proxy_domain, created
