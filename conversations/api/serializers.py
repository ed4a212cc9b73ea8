"""Input and output of `POST /rest/v1/email/address/proxy`, and the input of `POST /rest/v1/email`
with proxy domains."""

from __future__ import annotations

from rest_framework import serializers

from conversations.models import Conversation, ProxyDomain
from conversations.services import address_domain, own_domains
from tracking.api import email_serializers as tracking_email
from tracking.api.directory_serializers import AccountSlugField
from tracking.models import Link

# One request opens at most this many conversations (all or none), so a request stays short.
PROXY_BATCH_MAX = 100


def validate_parties(attrs: dict, *, own: set[str]) -> None:
    """Party addresses must differ (else the router could not tell who is writing) and must
    not be our own addresses (relaying into them would loop back into us)."""
    errors: dict[str, list[str]] = {}
    sender, recipient = attrs.get("sender_address", ""), attrs.get("recipient_address", "")
    for field, address in (("sender_address", sender), ("recipient_address", recipient)):
        if address and address_domain(address) in own:
            errors[field] = [
                f"{field} cannot be an address on one of our alias, proxy or bounce domains"
            ]
    if sender and sender.lower() == recipient.lower():
        errors.setdefault("recipient_address", []).append(
            "recipient_address must differ from sender_address"
        )
    if errors:
        raise serializers.ValidationError(errors)


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
        account = self.context["request"].user.account
        if not ProxyDomain.usable_by(account).filter(domain=value.strip().lower()).exists():
            raise serializers.ValidationError("proxy_domain is not configured for your account")
        return value.strip().lower()

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


class SendEmailSerializer(tracking_email.SendEmailSerializer):
    """`POST /rest/v1/email` as the send code defines it, with `proxy_domain` accepted when the
    account may use the domain (shared, or private to it)."""

    def validate_proxy_domain(self, value: str) -> str:
        value = value.strip().lower()
        if value and not ProxyDomain.usable_by(self.account).filter(domain=value).exists():
            raise serializers.ValidationError(
                "proxy_domain is not configured for your account", code="not_configured"
            )
        return value

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        if attrs.get("proxy_domain"):
            validate_parties(attrs, own=own_domains())
        return attrs
