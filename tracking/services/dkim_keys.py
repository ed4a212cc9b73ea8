"""DKIM keys from birth to retirement (the model's docstring draws the states).

A key is born `pending`: it signs nothing until its TXT record has been seen in DNS (by a
domain check, conversations/domains.py), because a signature whose key cannot be found is
worth less than none. It then becomes `active`, and the key it replaces `retiring`: that
one signs nothing more, but its record must stay published for DKIM_ROTATION_OVERLAP_DAYS,
since receivers may verify mail it signed a while later. After that it is `retired`, its
private key wiped, and its record may go.

Our own domains (alias, proxy, bounce) get a key when they are added (`dkim_key_ensure`);
customer domains when an operator adds one (`dkim_key_add`, the `add_dkim_key` command).
"""

from __future__ import annotations

import base64
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from tracking.models import DkimKey

Status = DkimKey.Status
SELECTOR_PREFIX = "iovox"
SELECTOR_TRIES = 100


class InvalidKey(ValueError):
    pass


def dkim_key_generate(*, bits: int = 2048) -> tuple[str, str]:
    """A new RSA key: (private key PEM, public key as base64 DER: the DNS p= value)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _pem(key), _public(key)


def dkim_key_public(private_key_pem: str) -> str:
    """The DNS p= value of a PEM private key; InvalidKey when it is not an RSA key."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"not a usable PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKey("only RSA keys are supported")
    if key.key_size < 1024:
        raise InvalidKey(f"a {key.key_size}-bit key is too weak: use 2048 bits")
    return _public(key)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def domain_normalise(domain: str) -> str:
    """`domain` lower-cased without a trailing dot; InvalidKey unless it is a host name of
    two labels or more (letters, digits and hyphens)."""
    domain = domain.strip().lower().rstrip(".")
    if len(domain) > 253 or "." not in domain or not all(map(_is_label, domain.split("."))):
        raise InvalidKey(f"{domain!r} is not a domain name")
    return domain


def dkim_key_check(*, domain: str, selector: str, private_key: str = "") -> tuple[str, str, str]:
    """The domain and selector, normalised, and the public key (the DNS p= value) of the PEM
    key when one is given ("" otherwise); InvalidKey when any of them is not usable. An
    empty selector stays empty (one is chosen when the key is added)."""
    domain = domain_normalise(domain)
    selector = selector.strip().lower()
    if selector and not _is_label(selector):
        raise InvalidKey(f"{selector!r} is not a valid selector (letters, digits, hyphens)")
    public = dkim_key_public(private_key) if private_key.strip() else ""
    return domain, selector, public


@transaction.atomic
def dkim_key_add(
    *, domain: str, selector: str = "", private_key: str = "", bits: int = 2048
) -> DkimKey:
    """A new pending key for `domain`, the given PEM key or a new one, under `selector` (or a
    new dated one). It signs once its record (`dns_record`) is seen in DNS; until then the
    domain's active key, if any, goes on signing. A pending key it replaces is deleted (it
    never signed anything)."""
    domain, selector, public = dkim_key_check(
        domain=domain, selector=selector, private_key=private_key
    )
    DkimKey.objects.filter(domain=domain, status=Status.PENDING).delete()
    if selector and DkimKey.objects.filter(domain=domain, selector=selector).exists():
        raise InvalidKey(f"{domain} already has a key with the selector {selector}: choose another")
    return _key_create(domain, selector, private_key, public, bits)


def _key_create(domain: str, selector: str, private_key: str, public: str, bits: int) -> DkimKey:
    if not public:
        private_key, public = dkim_key_generate(bits=bits)
    return DkimKey.objects.create(
        domain=domain,
        selector=selector or _selector_new(domain),
        private_key=private_key,
        public_key=public,
        status=Status.PENDING,
    )


def dkim_key_rotate(*, domain: str) -> DkimKey:
    """The start of a rotation: a new pending key for `domain`, or the one already waiting
    for its record (a rotation under way is not started again)."""
    domain = domain_normalise(domain)
    waiting = DkimKey.objects.filter(domain=domain, status=Status.PENDING).first()
    return waiting or dkim_key_add(domain=domain)


def dkim_key_ensure(*, domain: str) -> DkimKey | None:
    """Give one of our domains a key when it has none signing or waiting: the new key, or None
    when it had one. Idempotent; of two processes racing, one adds the key (the other's
    dated selector collides and it adds none)."""
    domain = domain_normalise(domain)
    keys = DkimKey.objects.filter(domain=domain, status__in=[Status.PENDING, Status.ACTIVE])
    if keys.exists():
        return None
    try:
        with transaction.atomic():
            return _key_create(domain, "", "", "", 2048)
    except IntegrityError:
        return None


@transaction.atomic
def dkim_key_activate(*, key: DkimKey) -> bool:
    """Sign with `key` from now on (its record has been seen): the domain's active key, if
    any, becomes retiring. False when the key was no longer pending (another process got
    there first, or it was retired meanwhile)."""
    now = timezone.now()
    # The old key first: at most one active key a domain (a database constraint).
    DkimKey.objects.filter(domain=key.domain, status=Status.ACTIVE).exclude(pk=key.pk).update(
        status=Status.RETIRING,
        retire_after=now + timedelta(days=settings.DKIM_ROTATION_OVERLAP_DAYS),
    )
    claimed = DkimKey.objects.filter(pk=key.pk, status=Status.PENDING).update(
        status=Status.ACTIVE, activated_at=now
    )
    if not claimed:
        transaction.set_rollback(True)
        return False
    _keys_changed()
    key.refresh_from_db()
    return True


def dkim_key_retire(*, key: DkimKey) -> bool:
    """Stop signing with `key` at once, for good (a leaked key; or a replaced key whose
    overlap is over): its private key is wiped. False when it was retired already."""
    retired = (
        DkimKey.objects.filter(pk=key.pk)
        .exclude(status=Status.RETIRED)
        .update(status=Status.RETIRED, private_key="")
    )
    if retired:
        _keys_changed()
        key.refresh_from_db()
    return bool(retired)


def dkim_keys_overlap_ended(*, domain: str) -> list[DkimKey]:
    """Retire the domain's replaced keys whose overlap is over; the keys retired."""
    due = DkimKey.objects.filter(
        domain=domain, status=Status.RETIRING, retire_after__lte=timezone.now()
    )
    return [key for key in due if dkim_key_retire(key=key)]


def _keys_changed() -> None:
    """This process signs with the new keys at once (others within KEYS_TTL): the cache is
    emptied now, as a saved key empties it (TrackingConfig.ready), and again on commit, in
    case another thread read the old keys meanwhile."""
    from tracking.delivery.dkim import dkim_key_cache

    dkim_key_cache.clear()
    transaction.on_commit(dkim_key_cache.clear)


def _selector_new(domain: str) -> str:
    """`iovox-YYYYMMDD`, with `-2`, `-3`... when the domain has that one already."""
    base = f"{SELECTOR_PREFIX}-{timezone.now():%Y%m%d}"
    taken = set(
        DkimKey.objects.filter(domain=domain, selector__startswith=base).values_list(
            "selector", flat=True
        )
    )
    for n in range(1, SELECTOR_TRIES + 1):
        selector = base if n == 1 else f"{base}-{n}"
        if selector not in taken:
            return selector
    raise InvalidKey(f"{domain} has {SELECTOR_TRIES} keys made today: choose a selector")


def _is_label(value: str) -> bool:
    return (
        0 < len(value) <= 63
        and value.isascii()
        and value.replace("-", "").isalnum()
        and not value.startswith("-")
        and not value.endswith("-")
    )
