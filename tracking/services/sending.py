"""`email_send`: the one service behind `POST /rest/v1/email`, with or without a proxy domain.

Tracking sends mail; conversations (proxy addresses) build on it. So that tracking never
imports conversations, the proxy part is a step named by the setting `EMAIL_PROXY_STEP` (a
dotted path to a class, None when no app provides one): the serializer asks it whether a
proxy domain may be used, and the service hands it a message that names one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from tracking.models import Account, Link, Message
from tracking.services.messages import message_accept


class ProxyDomainRefused(ValueError):
    """The account may not send through this proxy domain (unknown, another's, or no proxy
    step installed)."""

    def __init__(self, message: str = "proxy_domain is not configured for your account"):
        super().__init__(message)


@dataclass(frozen=True)
class Sent:
    """What `email_send` accepted: the message and, through a proxy domain, its conversation."""

    message: Message
    conversation_id: uuid.UUID | None = None
    proxy_address: str = ""


class ProxyStep(Protocol):
    """What the app named by EMAIL_PROXY_STEP provides (conversations.sending)."""

    def usable_domain(self, *, account: Account, domain: str) -> str:
        """The domain, normalised, when the account may use it; else ProxyDomainRefused."""

    def parties_errors(self, *, sender_address: str, recipient_address: str) -> dict:
        """Field name to messages for parties that cannot talk through a proxy address."""

    def send(self, *, account: Account, link: Link, proxy_domain: str, **fields: Any) -> Sent:
        """Open a conversation and accept its first message."""


def proxy_step() -> ProxyStep | None:
    path = getattr(settings, "EMAIL_PROXY_STEP", None)
    return import_string(path)() if path else None


def proxy_domain_usable(*, account: Account, domain: str) -> str:
    """`domain` normalised, if the account may send through it; ProxyDomainRefused if not."""
    step = proxy_step()
    if step is None:
        raise ProxyDomainRefused()
    return step.usable_domain(account=account, domain=domain)


def proxy_parties_errors(*, sender_address: str, recipient_address: str) -> dict:
    step = proxy_step()
    if step is None:
        return {}
    return step.parties_errors(sender_address=sender_address, recipient_address=recipient_address)


def email_send(*, account: Account, link: Link, proxy_domain: str = "", **fields: Any) -> Sent:
    """Accept a message of the API for delivery. With a `proxy_domain` (validated by
    `proxy_domain_usable`), the proxy step opens a conversation (party A the sender, party B
    the recipient) and the message goes out From "proxy_name or sender_name <proxy address>"."""
    if not proxy_domain:
        return Sent(message=message_accept(account=account, link=link, **fields))
    step = proxy_step()
    if step is None:
        raise ProxyDomainRefused()
    return step.send(account=account, link=link, proxy_domain=proxy_domain, **fields)
