"""Proxy domains and conversations."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from conversations.models import Conversation, ProxyDomain, RelayedMessageId
from tracking.addresses import address_domain
from tracking.models import Account, AliasDomain, Link, Message
from tracking.services.dkim_keys import dkim_key_ensure, domain_normalise
from tracking.services.messages import message_accept

# The spec's example proxy address is "hn7m890cfqt234@example.com": 14 lower-case letters and
# digits, about 72 bits of randomness, so an address cannot be guessed from another one.
PROXY_LOCAL_PART_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
PROXY_LOCAL_PART_LENGTH = 14
PROXY_ADDRESS_TRIES = 10


class ProxyDomainNotUsable(ValueError):
    """The account may not generate addresses on this domain (unknown, or another's)."""

    def __init__(self, domain: str):
        super().__init__("proxy_domain is not configured for your account")
        self.domain = domain


@transaction.atomic
def proxy_domain_add(*, domain: str, account: Account | None = None) -> tuple[ProxyDomain, bool]:
    """Make a proxy domain shared (no account) or private to one account, with a DKIM key of
    its own (pending until its record is published: docs/deliverability.md). Idempotent: an
    existing domain is moved to the given sharing. InvalidKey when `domain` is not a domain
    name."""
    proxy_domain, created = ProxyDomain.objects.get_or_create(
        domain=domain_normalise(domain), defaults={"account": account}
    )
    if not created and proxy_domain.account_id != (account.pk if account else None):
        proxy_domain.account = account
        proxy_domain.save(update_fields=["account"])
    dkim_key_ensure(domain=proxy_domain.domain)
    return proxy_domain, created


def proxy_domain_for_account(*, account: Account, domain: str) -> ProxyDomain:
    """The proxy domain named `domain` if the account may use it (shared, or private to it)."""
    proxy_domain = ProxyDomain.usable_by(account).filter(domain=domain.strip().lower()).first()
    if proxy_domain is None:
        raise ProxyDomainNotUsable(domain)
    return proxy_domain


def proxy_local_part_generate() -> str:
    return "".join(
        secrets.choice(PROXY_LOCAL_PART_ALPHABET) for _ in range(PROXY_LOCAL_PART_LENGTH)
    )


def own_domains() -> set[str]:
    """Every domain whose mail comes back to our own inbound server: alias, bounce and proxy
    domains. Forwarding or relaying to one of them would be a loop."""
    configured = (
        AliasDomain.objects.order_by()
        .values_list("domain")
        .union(ProxyDomain.objects.order_by().values_list("domain"))
    )
    return {settings.ALIAS_DOMAIN, settings.BOUNCE_DOMAIN} | {d for (d,) in configured}


def own_domains_among(domains: Iterable[str]) -> set[str]:
    """Those of `domains` (lower-cased) that are our own alias, bounce or proxy domains, in
    one query for all of them (a worker's batch)."""
    domains = {domain.strip().lower() for domain in domains}
    own = domains & {settings.ALIAS_DOMAIN, settings.BOUNCE_DOMAIN}
    if rest := domains - own:
        configured = (
            AliasDomain.objects.filter(domain__in=rest)
            .order_by()
            .values_list("domain")
            .union(ProxyDomain.objects.filter(domain__in=rest).order_by().values_list("domain"))
        )
        own |= {domain for (domain,) in configured}
    return own


def conversation_parties_errors(
    *, sender_address: str, recipient_address: str, own: set[str]
) -> dict[str, list[str]]:
    """Why two parties cannot talk through a proxy address, by field: their addresses must
    differ (else the router could not tell who is writing) and must not be our own
    addresses (relaying into them would loop back into us). `own` is `own_domains()`."""
    errors: dict[str, list[str]] = {}
    sender, recipient = sender_address, recipient_address
    for field, address in (("sender_address", sender), ("recipient_address", recipient)):
        if address and address_domain(address) in own:
            errors[field] = [
                f"{field} cannot be an address on one of our alias, proxy or bounce domains"
            ]
    if sender and sender.lower() == recipient.lower():
        errors.setdefault("recipient_address", []).append(
            "recipient_address must differ from sender_address"
        )
    return errors


def conversation_open(
    *,
    account: Account,
    link: Link,
    proxy_domain: str,
    party_a_address: str,
    party_a_name: str = "",
    party_b_address: str,
    party_b_name: str = "",
    proxy_name: str = "",
) -> Conversation:
    """Open a conversation between party A (who asked for it) and party B through a new proxy
    address with a random local part on `proxy_domain`, which the account must be allowed to
    use. A collision with an existing address (astronomically rare) draws a new one."""
    if link.account_id != account.pk:
        raise ValueError("the link belongs to another account")
    domain = proxy_domain_for_account(account=account, domain=proxy_domain)
    for _ in range(PROXY_ADDRESS_TRIES):
        address = f"{proxy_local_part_generate()}@{domain.domain}"
        try:
            # A savepoint, so a collision does not spoil a surrounding transaction.
            with transaction.atomic():
                return Conversation.objects.create(
                    account=account,
                    link=link,
                    proxy_domain=domain,
                    proxy_address=address,
                    proxy_name=proxy_name,
                    party_a_address=party_a_address.strip(),
                    party_a_name=party_a_name,
                    party_b_address=party_b_address.strip(),
                    party_b_name=party_b_name,
                )
        except IntegrityError:
            continue
    raise RuntimeError(f"no free proxy address on {domain.domain} after {PROXY_ADDRESS_TRIES}")


def conversation_for_alias(
    *, link: Link, writer_address: str, writer_name: str = ""
) -> Conversation:
    """The conversation that mail from `writer_address` to the link's alias opens (or
    continues) with the link's contact: party A the writer, party B the contact, its
    `proxy_address` the writer's reverse address, on the alias's domain and unique to
    (link, writer). A contact changed on the link since is taken on as party B."""
    writer = writer_address.strip().lower()
    contact = link.destination
    existing = Conversation.objects.filter(
        kind=Conversation.Kind.ALIAS, link=link, party_a_address=writer
    ).first()
    if existing is not None:
        if contact and contact.email and existing.party_b_address != contact.email:
            existing.party_b_address, existing.party_b_name = contact.email, contact.name
            existing.save(update_fields=["party_b_address", "party_b_name"])
        return existing
    domain = address_domain(link.email_address)
    for _ in range(PROXY_ADDRESS_TRIES):
        try:
            with transaction.atomic():  # a savepoint: a clash must not spoil the caller's batch
                return Conversation.objects.create(
                    account_id=link.account_id,
                    link=link,
                    kind=Conversation.Kind.ALIAS,
                    proxy_address=f"{proxy_local_part_generate()}@{domain}",
                    party_a_address=writer,
                    party_a_name=writer_name[:200],
                    party_b_address=contact.email if contact else "",
                    party_b_name=contact.name[:200] if contact else "",
                )
        except IntegrityError:
            continue
    raise RuntimeError(f"no free reverse address on {domain} after {PROXY_ADDRESS_TRIES}")


@transaction.atomic
def conversation_send(
    *,
    account: Account,
    link: Link,
    proxy_domain: str,
    sender_address: str,
    sender_name: str,
    recipient_address: str,
    recipient_name: str,
    proxy_name: str = "",
    **message_fields: Any,
) -> tuple[Conversation, Message]:
    """Open a conversation (party A the sender, party B the recipient) and accept its first
    message, which goes out From "proxy_name or sender_name <proxy address>"."""
    conversation = conversation_open(
        account=account,
        link=link,
        proxy_domain=proxy_domain,
        party_a_address=sender_address,
        party_a_name=sender_name,
        party_b_address=recipient_address,
        party_b_name=recipient_name,
        proxy_name=proxy_name,
    )
    message = message_accept(
        account=account,
        link=link,
        sender_address=sender_address,
        sender_name=sender_name,
        recipient_address=recipient_address,
        recipient_name=recipient_name,
        proxy_name=proxy_name,
        conversation_id=conversation.conversation_id,
        proxy_address=conversation.proxy_address,
        **message_fields,
    )
    return conversation, message


# A Message-ID as In-Reply-To and References name it: <...> of printable ASCII, short enough
# to be remembered (RelayedMessageId).
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,248}>")
# References grows by one id a message; a relayed copy names the first and the latest ones
# (RFC 5322 section 3.6.4 lets a long list be trimmed so).
MAX_REFERENCES = 20


@dataclass(frozen=True)
class RelayedThread:
    """The threading headers of a relayed copy ("" for one it goes without)."""

    message_id: str
    in_reply_to: str
    references: str


def conversation_relay_thread(
    *, conversation: Conversation, message_id: str, in_reply_to: str, references: str
) -> RelayedThread:
    """The threading headers of a message relayed in `conversation`, as the other party is to
    see them. The copy gets a Message-ID of ours on the proxy domain (the same one whenever
    this message is relayed again), remembered beside the writer's own. Each Message-ID that
    In-Reply-To and References name is shown by the name the other party knows it by: ours
    for a message of the writer's, the original for one of the other party's own. An id of
    neither kind is left out, unless it is on one of our domains (the conversation's first
    message, sent through the API): it would name the writer's domain or host."""
    domain = address_domain(conversation.proxy_address)
    original = _message_ids(message_id)[:1]
    replied = _message_ids(in_reply_to)
    referenced = _message_ids(references)
    named = original + replied + referenced
    known = list(
        RelayedMessageId.objects.filter(conversation=conversation).filter(
            Q(original__in=named) | Q(ours__in=named)
        )
    )
    ours = next((row.ours for row in known if original and row.original == original[0]), "")
    if not ours:
        ours = _remember_message_id(conversation, original[0] if original else "", domain)
    shown: dict[str, str] = {}
    for row in known:
        shown[row.original], shown[row.ours] = row.ours, row.original
    ours_domains = {domain, settings.BOUNCE_DOMAIN, settings.ALIAS_DOMAIN}

    def show(ids: list[str]) -> list[str]:
        named = (shown.get(i) or (i if _id_domain(i) in ours_domains else "") for i in ids)
        return list(dict.fromkeys(i for i in named if i))

    in_reply_to_shown = show(replied)
    references_shown = show(referenced)
    if len(references_shown) > MAX_REFERENCES:
        references_shown = references_shown[:1] + references_shown[1 - MAX_REFERENCES :]
    return RelayedThread(
        message_id=ours,
        in_reply_to=" ".join(in_reply_to_shown),
        references=" ".join(references_shown),
    )


def _remember_message_id(conversation: Conversation, original: str, domain: str) -> str:
    """A new Message-ID of ours for the message the writer named `original`, remembered;
    the one remembered already when another worker got there first."""
    ours = f"<{secrets.token_hex(16)}@{domain}>"
    if not original:
        return ours  # nothing to map back to: a reply naming ours keeps it
    try:
        with transaction.atomic():  # a savepoint: a clash must not spoil the caller's batch
            RelayedMessageId.objects.create(conversation=conversation, original=original, ours=ours)
    except IntegrityError:
        return RelayedMessageId.objects.get(conversation=conversation, original=original).ours
    return ours


def _message_ids(value: str) -> list[str]:
    return _MESSAGE_ID.findall(value or "")


def _id_domain(message_id: str) -> str:
    return message_id[1:-1].rpartition("@")[2].lower()
