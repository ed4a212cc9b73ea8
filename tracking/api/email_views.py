"""`POST /rest/v1/email` (send a tracked email) and `GET /rest/v1/email/{message_id}`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from tracking import access
from tracking.api.email_serializers import (
    EventPageSerializer,
    SendEmailSerializer,
    message_detail,
)
from tracking.services.directory import LinkGone, link_must_exist
from tracking.services.sending import email_send

SENT_RESPONSE = inline_serializer(
    "EmailAccepted",
    {
        "message_id": serializers.UUIDField(),
        "conversation_id": serializers.UUIDField(required=False),
        "proxy_address": serializers.EmailField(required=False),
    },
)


class SendEmailView(APIView):
    """`POST /rest/v1/email`: the one route for sending. With a `proxy_domain`, the message
    opens a conversation (party A the sender, party B the recipient) and goes out From
    "proxy_name or sender_name <proxy address>"; the answer adds `conversation_id` and
    `proxy_address`."""

    @extend_schema(
        request=SendEmailSerializer,
        responses={201: SENT_RESPONSE, 400: OpenApiResponse(description='{"errors": [...]}')},
    )
    def post(self, request):
        serializer = SendEmailSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            with link_must_exist(data["link"]):
                sent = email_send(account=request.user.account, **data)
        except LinkGone:
            raise serializers.ValidationError({"link_id": ["does not exist"]}) from None
        body = {"message_id": str(sent.message.message_id)}
        if sent.conversation_id:
            body["conversation_id"] = str(sent.conversation_id)
            body["proxy_address"] = sent.proxy_address
        return Response(body, status=status.HTTP_201_CREATED)


class EmailDetailView(APIView):
    @extend_schema(
        parameters=[EventPageSerializer],
        responses={200: OpenApiResponse(description="the message")},
    )
    def get(self, request, message_id: str):
        """One message of the caller's account: its search fields, subject, delivery attempts,
        the counts of its opens, clicks and bounces, and a page of the tracking events it
        kept (its first and most recent ones): `page` (from 1) of `limit` events."""
        paging = EventPageSerializer(data=request.query_params)
        paging.is_valid(raise_exception=True)
        account = request.user.account
        message = access.get_message_for_account(account, message_id)
        return Response(message_detail(message, account=account, **paging.validated_data))
