"""Input and output of `POST /rest/v1/email/address/proxy`."""

from __future__ import annotations

from rest_framework import serializers

from conversations.models import Conversation
from conversations.services import (
    ProxyDomainNotUsable,
    conversation_parties_errors,
    proxy_domain_for_account,
)
from tracking.api import email_serializers as tracking_email
from tracking.api.directory_serializers import AccountSlugField
from tracking.models import Link

# One request opens at most this many conversations (all or none), so a request stays short.
PROXY_BATCH_MAX = 100


def validate_parties(attrs: dict, *, own: set[str]) -> None:
    errors = conversation_parties_errors(
        sender_address=attrs.get("sender_address", ""),
        recipient_address=attrs.get("recipient_address", ""),
        own=own,
    )
    if errors:
        raise serializers.ValidationError(errors)


def usable_proxy_domain(account, value: str) -> str:
    """The domain, normalised, when the account may use it; the service owns the rule."""
    try:
        return proxy_domain_for_account(account=account, domain=value).domain
    except ProxyDomainNotUsable as e:
        raise serializers.ValidationError(str(e), code="not_configured") from None


class ProxyAddressSerializer(serializers.Serializer):
    link_id = AccountSlugField(source="link", slug_field="link_id", queryset=Link.objects.all())
    sender_address = tracking_email.AddressField(max_length=254)
    recipient_address = tracking_email.AddressField(max_length=254)
    proxy_domain = tracking_email.HeaderCharField(max_length=253)
    proxy_name = tracking_email.HeaderCharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    proxy_address = serializers.CharField(read_only=True)
    conversation_id = serializers.UUIDField(read_only=True)

    def validate_proxy_domain(self, value: str) -> str:
        return usable_proxy_domain(self.context["request"].user.account, value)

    def validate(self, attrs: dict) -> dict:
        validate_parties(attrs, own=self.context["own_domains"])
        return attrs

    def to_representation(self, conversation: Conversation) -> dict:
        return {
            "link_id": conversation.link.link_id,
            "sender_address": conversation.party_a_address,
            "recipient_address": conversation.party_b_address,
            "proxy_address": conversation.proxy_address,
            "conversation_id": str(conversation.conversation_id),
        }
