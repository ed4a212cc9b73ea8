"""`POST /rest/v1/email` (send a tracked email) and `GET /rest/v1/email/{message_id}`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from tracking import access
from tracking.api.email_serializers import (
    EventPageSerializer,
    SendEmailSerializer,
    message_detail,
)

SENT_RESPONSE = inline_serializer(
    "EmailAccepted",
    {
        "message_id": serializers.UUIDField(),
        "conversation_id": serializers.UUIDField(required=False),
        "proxy_address": serializers.EmailField(required=False),
    },
)


class SendEmailView(APIView):
    """Base of `POST /rest/v1/email`, whose `post` is the conversations app's (one route, with
    or without a proxy domain)."""

    serializer_class = SendEmailSerializer

    def get_serializer(self, *args, **kwargs):
        return self.serializer_class(*args, context={"request": self.request}, **kwargs)


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
