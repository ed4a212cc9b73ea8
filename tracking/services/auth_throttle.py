"""Throttling repeated failed API authentications, per username and per client IP.

django-axes guards the portal's login form, where it hooks Django's `authenticate()`. The API
authenticates every request by its `username` and `secureKey` headers, and a lookup in axes'
tables on every request would cost the hot path several queries, so the API has this small
counterpart over Django's cache: a wrong key (or an unknown username) counts against the
username and against the client IP; from the API_AUTH_FAILURE_LIMIT-th failure within
API_AUTH_FAILURE_WINDOW seconds on, every request for that username or from that IP is
answered 429 with Retry-After for API_AUTH_FAILURE_WINDOW seconds, the right key included (so
guessing goes no faster than the limit). The counts live in the default cache: shared by every
web process when REDIS_URL is set, per process otherwise.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

PREFIX = "api-auth"


def _keys(*, username: str | None, ip: str | None) -> list[tuple[str, str]]:
    """(failure count key, lockout key) for each thing counted; hashed, so any header value
    makes a valid cache key."""
    keys = []
    for kind, value in (("user", username), ("ip", ip)):
        if value:
            digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]
            keys.append((f"{PREFIX}:{kind}:{digest}:failures", f"{PREFIX}:{kind}:{digest}:lock"))
    return keys


def auth_lockout_remaining(*, username: str, ip: str | None) -> int:
    """Seconds until this username and IP may try again; 0 when neither is locked out."""
    if settings.API_AUTH_FAILURE_LIMIT <= 0:
        return 0
    try:
        locks = cache.get_many([lock for _, lock in _keys(username=username, ip=ip)])
    except Exception:  # noqa: BLE001 - an unreachable cache must not stop the API
        log.warning("the authentication throttle cannot read its cache", exc_info=True)
        return 0
    if not locks:
        return 0
    return max(1, math.ceil(max(locks.values()) - time.time()))


def auth_failure_record(*, username: str, ip: str | None) -> int:
    """Count one failed authentication and lock out what reached the limit (as django-axes
    does, the failure that reaches it is the first one refused); the seconds of the lockout
    it started, or 0."""
    limit, window = settings.API_AUTH_FAILURE_LIMIT, settings.API_AUTH_FAILURE_WINDOW
    if limit <= 0:
        return 0
    locked = 0
    try:
        for count_key, lock_key in _keys(username=username, ip=ip):
            if _count(count_key, window) >= limit:
                cache.add(lock_key, time.time() + window, timeout=window)
                locked = window
    except Exception:  # noqa: BLE001 - an unreachable cache must not stop the API
        log.warning("the authentication throttle cannot write its cache", exc_info=True)
    return locked


def _count(key: str, window: int) -> int:
    # The window starts with the first failure; incr keeps the key's expiry.
    cache.add(key, 0, timeout=window)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=window)
        return 1


def auth_failures_reset(*, username: str | None = None, ip: str | None = None) -> None:
    """Forget the failures and lift the lockout of a username and/or an IP (admin action)."""
    cache.delete_many([key for pair in _keys(username=username, ip=ip) for key in pair])
