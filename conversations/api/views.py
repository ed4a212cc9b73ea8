"""`POST /rest/v1/email` (with or without a proxy domain) and
`POST /rest/v1/email/address/proxy` (open one or more conversations at once)."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.serializers import (
    PROXY_BATCH_MAX,
    ProxyAddressSerializer,
    SendEmailSerializer,
)
from conversations.services import conversation_open, conversation_send, own_domains
from tracking.api import email_views
from tracking.api.exceptions import error_list
from tracking.services.directory import LinkGone, link_must_exist
from tracking.services.messages import message_accept


class ProxyAddressView(APIView):
    """The spec's array in, the spec's array out (201), every entry or none."""

    @extend_schema(
        request=ProxyAddressSerializer(many=True),
        responses={201: ProxyAddressSerializer(many=True)},
    )
    def post(self, request):
        entries = self.validated_entries(request)
        account = request.user.account
        with transaction.atomic():
            conversations = [
                conversation_open(
                    account=account,
                    link=entry["link"],
                    proxy_domain=entry["proxy_domain"],
                    party_a_address=entry["sender_address"],
                    party_b_address=entry["recipient_address"],
                    proxy_name=entry["proxy_name"],
                )
                for entry in entries
            ]
        data = [ProxyAddressSerializer(c).data for c in conversations]
        return Response(data, status=status.HTTP_201_CREATED)

    def validated_entries(self, request) -> list[dict]:
        """Each entry validated on its own; its errors prefixed by its index ("[0].link_id
        does not exist"), all of them reported at once."""
        data = request.data
        if not isinstance(data, list):
            raise serializers.ValidationError("body must be a JSON array of objects")
        if not data:
            raise serializers.ValidationError("body must hold at least one entry")
        if len(data) > PROXY_BATCH_MAX:
            raise serializers.ValidationError(
                f"body cannot hold more than {PROXY_BATCH_MAX} entries"
            )
        context = {"request": request, "own_domains": own_domains()}
        entries, errors = [], []
        for index, item in enumerate(data):
            if not isinstance(item, dict):
                errors.append(f"[{index}] must be a JSON object")
                continue
            serializer = ProxyAddressSerializer(data=item, context=context)
            if serializer.is_valid():
                entries.append(serializer.validated_data)
            else:
                errors += [f"[{index}].{error}" for error in error_list(serializer.errors)]
        if errors:
            raise serializers.ValidationError(errors)
        return entries


class SendEmailView(email_views.SendEmailView):
    """`POST /rest/v1/email`: the one route for sending. With a `proxy_domain`, the message
    opens a conversation (party A the sender, party B the recipient) and goes out From
    "proxy_name or sender_name <proxy address>"; the answer adds `conversation_id` and
    `proxy_address`."""

    serializer_class = SendEmailSerializer

    @extend_schema(
        request=SendEmailSerializer,
        responses={
            201: email_views.SENT_RESPONSE,
            400: OpenApiResponse(description='{"errors": [...]}'),
        },
    )
    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        proxy_domain = data.pop("proxy_domain", "")
        account = request.user.account
        try:
            with link_must_exist(data["link"]):
                if not proxy_domain:
                    message = message_accept(account=account, **data)
                    body = {"message_id": str(message.message_id)}
                    return Response(body, status.HTTP_201_CREATED)
                conversation, message = conversation_send(
                    account=account, proxy_domain=proxy_domain, **data
                )
        except LinkGone:
            raise serializers.ValidationError({"link_id": ["does not exist"]}) from None
        body = {
            "message_id": str(message.message_id),
            "conversation_id": str(conversation.conversation_id),
            "proxy_address": conversation.proxy_address,
        }
        return Response(body, status=status.HTTP_201_CREATED)
