"""The proxy step of `POST /rest/v1/email` (tracking/services/sending.py), named by the
setting EMAIL_PROXY_STEP: a message sent through a proxy domain opens a conversation."""

from __future__ import annotations

from typing import Any

from conversations.services import (
    ProxyDomainNotUsable,
    conversation_parties_errors,
    conversation_send,
    own_domains,
    proxy_domain_for_account,
)
from tracking.models import Account, Link
from tracking.services.sending import ProxyDomainRefused, Sent


class ConversationProxyStep:
    def usable_domain(self, *, account: Account, domain: str) -> str:
        try:
            return proxy_domain_for_account(account=account, domain=domain).domain
        except ProxyDomainNotUsable as e:
            raise ProxyDomainRefused(str(e)) from None

    def parties_errors(self, *, sender_address: str, recipient_address: str) -> dict:
        return conversation_parties_errors(
            sender_address=sender_address, recipient_address=recipient_address, own=own_domains()
        )

    def send(self, *, account: Account, link: Link, proxy_domain: str, **fields: Any) -> Sent:
        conversation, message = conversation_send(
            account=account, link=link, proxy_domain=proxy_domain, **fields
        )
        return Sent(
            message=message,
            conversation_id=conversation.conversation_id,
            proxy_address=conversation.proxy_address,
        )
