"""Who an address we receive mail for is: a link's alias, a conversation's proxy address, or
the VERP return path of a message we sent. Anything else is refused at RCPT TO."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from conversations.models import Conversation
from tracking.delivery.verp import verp_message_id
from tracking.models import Link, Message


class RouteKind(enum.StrEnum):
    ALIAS = "alias"
    PROXY = "proxy"
    BOUNCE = "bounce"


@dataclass(frozen=True)
class Recipient:
    address: str
    kind: RouteKind
    link: Link | None = None  # an alias's link, with its destination and account
    conversation: Conversation | None = None  # a proxy address's, with its link and account


def address_normalize(address: str) -> str:
    """Aliases, proxy and bounce addresses are all generated in lower case, so an address is
    matched case-insensitively by lower-casing it (and the indexes still serve the lookup)."""
    return address.strip().strip("<>").strip().lower()


def recipient_resolve(address: str) -> Recipient | None:
    return recipients_resolve([address]).get(address_normalize(address))


def recipients_resolve(addresses: Iterable[str]) -> dict[str, Recipient]:
    """Who each address is, keyed by its normalized form; addresses that are none of ours
    are left out. One query per kind of address for all of them (a worker's batch)."""
    wanted = {address_normalize(address) for address in addresses}
    wanted = {address for address in wanted if "@" in address}
    found: dict[str, Recipient] = {}
    if wanted:
        links = Link.objects.select_related("destination", "account")
        for link in links.filter(email_address__in=wanted):
            found[link.email_address] = Recipient(link.email_address, RouteKind.ALIAS, link=link)
    if rest := wanted - found.keys():
        conversations = Conversation.objects.select_related("link__account")
        for conversation in conversations.filter(proxy_address__in=rest):
            address = conversation.proxy_address
            found[address] = Recipient(address, RouteKind.PROXY, conversation=conversation)
    message_ids = {address: verp_message_id(address) for address in wanted - found.keys()}
    message_ids = {address: id_ for address, id_ in message_ids.items() if id_ is not None}
    if message_ids:
        sent = Message.objects.filter(message_id__in=message_ids.values())
        known = set(sent.values_list("message_id", flat=True))
        for address, message_id in message_ids.items():
            if message_id in known:
                found[address] = Recipient(address, RouteKind.BOUNCE)
    return found
