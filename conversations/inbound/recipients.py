"""Who an address we receive mail for is: a link's alias, a conversation's proxy address, or
the VERP return path of a message we sent. Anything else is refused at RCPT TO."""

from __future__ import annotations

import enum
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
    address = address_normalize(address)
    if "@" not in address:
        return None
    link = Link.objects.select_related("destination", "account").filter(email_address=address)
    if link := link.first():
        return Recipient(address, RouteKind.ALIAS, link=link)
    conversation = Conversation.objects.select_related("link__account")
    if conversation := conversation.filter(proxy_address=address).first():
        return Recipient(address, RouteKind.PROXY, conversation=conversation)
    message_id = verp_message_id(address)
    if message_id is not None and Message.objects.filter(message_id=message_id).exists():
        return Recipient(address, RouteKind.BOUNCE)
    return None
