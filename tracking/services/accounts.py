"""Accounts, portal users and API credentials."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from tracking.caching import ProcessCache
from tracking.models import Account, ApiCredential, User
from tracking.models.accounts import hash_secure_key, username_validator

# Compared against when a username is unknown, so that costs what a wrong key costs.
DUMMY_KEY_HASH = hash_secure_key(secrets.token_urlsafe(32))


def secure_key_generate() -> str:
    """A new secure key: 256 bits of randomness, URL-safe."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class IssuedCredential:
    """A credential together with its key in clear, which exists only at this moment."""

    credential: ApiCredential
    secure_key: str


def username_check(username: str) -> str:
    """The username, or ValidationError("username may contain only ...") when an HTTP header
    could not carry it."""
    try:
        username_validator(username)
    except ValidationError as exc:
        raise ValidationError(f"username {exc.messages[0]}", code="invalid_username") from None
    return username


def credential_create(
    *, account: Account, username: str, secure_key: str | None = None
) -> IssuedCredential:
    username_check(username)
    key = secure_key or secure_key_generate()
    credential = ApiCredential.objects.create(
        account=account, username=username, key_hash=hash_secure_key(key), key_hint=key[:4]
    )
    return IssuedCredential(credential=credential, secure_key=key)


def credential_rotate(*, credential: ApiCredential, secure_key: str | None = None) -> str:
    """Replace the key of a credential; the old key stops working at once."""
    key = secure_key or secure_key_generate()
    credential.key_hash = hash_secure_key(key)
    credential.key_hint = key[:4]
    credential.save(update_fields=["key_hash", "key_hint"])
    return key


# Credentials that authenticated recently in this process, by username, so a client sending
# back to back costs no lookup per request. Cleared when this process changes or deletes a
# credential (TrackingConfig.ready); another process sees a rotated or deactivated key within
# API_CACHE_SECONDS. Only credentials found active are kept, and only the right key is answered
# from here: every failure goes to the database, so a wrong key for a known username and an
# unknown username cost the same (one query, one hash comparison).
credential_cache: ProcessCache[ApiCredential] = ProcessCache()


def credential_authenticate(*, username: str, secure_key: str) -> ApiCredential | None:
    """The active credential for this username and key (with its account), or None; its
    use is recorded (`touch`)."""
    cached = credential_cache.get(username)
    if cached is not None and cached.key_matches(secure_key):
        cached.touch()
        return cached
    credential = (
        ApiCredential.objects.select_related("account")
        .filter(username=username, is_active=True)
        .first()
    )
    if credential is None:
        hmac.compare_digest(DUMMY_KEY_HASH, hash_secure_key(secure_key))
        return None
    if not credential.key_matches(secure_key):
        return None
    credential_cache.put(username, credential)
    credential.touch()
    return credential


@transaction.atomic
def account_create(
    *, username: str, secure_key: str | None = None, password: str | None = None
) -> tuple[Account, IssuedCredential, User]:
    """An account with an API credential and a portal user, all named `username`."""
    username_check(username)
    account = Account.objects.create(name=username)
    issued = credential_create(account=account, username=username, secure_key=secure_key)
    user = User.objects.create_user(username=username, password=password, account=account)
    if password is None:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return account, issued, user
