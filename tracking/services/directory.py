"""Writes to the customer's directory: nodes, links, contacts, and link alias addresses."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from tracking.caching import ProcessCache
from tracking.models import Account, AliasDomain, Contact, Link, Node
from tracking.services.dkim_keys import dkim_key_ensure, domain_normalise

# RFC 5321 allows 64 octets in a local part; we keep a margin for a collision suffix.
LOCAL_PART_MAX = 64
_UNSAFE = re.compile(r"[^a-z0-9]+")


def node_create(*, account: Account, node_id: str, node_name: str, node_type: str = "") -> Node:
    return Node.objects.create(
        account=account, node_id=node_id, node_name=node_name, node_type=node_type
    )


def node_update(*, node: Node, **fields: Any) -> Node:
    return _update(node, fields, allowed={"node_id", "node_name", "node_type"})


def node_delete(*, node: Node) -> None:
    """Delete a node; refused (ProtectedError) while links belong to it."""
    node.delete()


def link_create(
    *,
    account: Account,
    node: Node,
    link_id: str,
    link_name: str,
    link_type: str = "",
    destination: Contact | None = None,
) -> Link:
    link_parts_check(account, node, destination)
    return Link.objects.create(
        account=account,
        node=node,
        link_id=link_id,
        link_name=link_name,
        link_type=link_type,
        destination=destination,
    )


# Links that messages were sent through recently in this process, by (account pk, link_id):
# a client sending back to back costs no lookup per message. Cleared when this process saves
# or deletes a link (TrackingConfig.ready); a link deleted by another process meanwhile makes
# the INSERT fail its foreign key, which `link_must_exist` turns into "does not exist".
link_cache: ProcessCache[Link] = ProcessCache()


class LinkGone(Exception):
    """The link was deleted while a message was being accepted for it."""


def link_for_sending(*, account: Account, link_id: str) -> Link | None:
    """The account's link with this link_id (the customer's id), or None."""
    key = (account.pk, link_id)
    link = link_cache.get(key)
    if link is None:
        link = Link.objects.filter(account=account, link_id=link_id).first()
        if link is None:
            return None
        link_cache.put(key, link)
    return link


@contextmanager
def link_must_exist(link: Link) -> Iterator[None]:
    """Around accepting a message for a link found by `link_for_sending`: a foreign key
    failure because the link is gone becomes LinkGone; any other error passes through."""
    try:
        yield
    except IntegrityError:
        if Link.objects.filter(pk=link.pk).exists():
            raise
        link_cache.clear()
        raise LinkGone(link.link_id) from None


def link_update(*, link: Link, **fields: Any) -> Link:
    link_parts_check(link.account, fields.get("node"), fields.get("destination"))
    return _update(
        link, fields, allowed={"node", "link_id", "link_name", "link_type", "destination"}
    )


def link_delete(*, link: Link) -> None:
    """Delete a link; refused (ProtectedError) while messages or conversations refer to it.
    Every process's link cache forgets it (TrackingConfig.ready)."""
    link.delete()


def link_set_destination(*, link: Link, destination: Contact | None) -> Link:
    """Choose the contact alias mail of this link is forwarded to (None: no destination)."""
    return link_update(link=link, destination=destination)


def contact_create(
    *, account: Account, name: str, email: str = "", contact_id: str | None = None
) -> Contact:
    return Contact.objects.create(
        account=account, contact_id=contact_id or secrets.token_hex(6), name=name, email=email
    )


def contact_update(*, contact: Contact, **fields: Any) -> Contact:
    return _update(contact, fields, allowed={"contact_id", "name", "email"})


def alias_local_part(node_name: str, link_name: str) -> str:
    """ "[NodeName]_[LinkName]", lower-cased, accents dropped, and every run of characters
    outside [a-z0-9] made a single hyphen, so the result is a plain dot-atom local part."""

    def safe(text: str) -> str:
        ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
        return _UNSAFE.sub("-", ascii_text.lower()).strip("-")

    node_part, link_part = safe(node_name) or "node", safe(link_name) or "link"
    half = (LOCAL_PART_MAX - 8) // 2
    return f"{node_part[:half].strip('-')}_{link_part[:half].strip('-')}"


@transaction.atomic
def alias_domain_add(*, domain: str, account: Account | None = None) -> AliasDomain:
    """A domain link aliases are generated on, shared (no account) or private to one, with a
    DKIM key of its own (pending until its record is published: docs/deliverability.md)."""
    alias_domain = AliasDomain.objects.create(domain=domain_normalise(domain), account=account)
    dkim_key_ensure(domain=alias_domain.domain)
    return alias_domain


def alias_domain_for(account: Account) -> str:
    """The account's private alias domain when it has one, else the shared default."""
    private = AliasDomain.objects.filter(account=account).order_by("pk").first()
    return private.domain if private else settings.ALIAS_DOMAIN


def link_generate_alias(*, link: Link, max_tries: int = 1000) -> tuple[Link, bool]:
    """Give the link its alias address, unique across the platform (a numeric suffix on a
    collision). Returns the link and whether an address was created; a link that already has
    one keeps it."""
    if link.email_address:
        return link, False
    base = alias_local_part(link.node.node_name, link.link_name)
    domain = alias_domain_for(link.account)
    for n in range(1, max_tries + 1):
        local = base if n == 1 else f"{base}{n}"
        address = f"{local}@{domain}"
        if Link.objects.filter(email_address=address).exists():
            continue
        try:
            # The unique constraint decides a race between two generators.
            with transaction.atomic():
                updated = Link.objects.filter(pk=link.pk, email_address__isnull=True).update(
                    email_address=address
                )
        except IntegrityError:
            continue
        link.refresh_from_db(fields=["email_address"])
        return link, updated == 1
    raise RuntimeError(f"no free alias address for {base}@{domain} after {max_tries} tries")


def link_parts_check(account: Account, *objects: Any) -> None:
    """A link's node and destination must be its account's (ValueError if not); None is no
    object to check. The admin's link form asks this too."""
    for obj in objects:
        if obj is not None and obj.account_id != account.pk:
            raise ValueError(f"{obj!r} belongs to another account")


def _update(instance, fields: dict[str, Any], *, allowed: set[str]):
    unknown = set(fields) - allowed
    if unknown:
        raise TypeError(f"cannot update {', '.join(sorted(unknown))}")
    for name, value in fields.items():
        setattr(instance, name, value)
    if fields:
        instance.save(update_fields=list(fields))
    return instance


class ContactInUse(Exception):
    """A contact cannot be deleted while links forward their alias mail to it."""

    def __init__(self, contact: Contact, link_ids: list[str]):
        self.contact = contact
        self.link_ids = link_ids
        super().__init__(
            f"contact {contact.contact_id} is the destination of {len(link_ids)} link(s)"
        )


@transaction.atomic
def contact_delete(*, contact: Contact) -> None:
    """Delete a contact, refused (ContactInUse) while any link uses it as its destination.
    The row lock keeps a concurrent link_set_destination from slipping in between."""
    Contact.objects.select_for_update().filter(pk=contact.pk).first()
    link_ids = list(
        Link.objects.filter(destination=contact)
        .order_by("link_id")
        .values_list("link_id", flat=True)
    )
    if link_ids:
        raise ContactInUse(contact, link_ids)
    contact.delete()
