"""`POST /rest/v1/email` (send a tracked email) and `GET /rest/v1/email/{message_id}`."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from tracking import access
from tracking.api.email_serializers import SendEmailSerializer, message_detail
from tracking.services.messages import message_accept

SENT_RESPONSE = inline_serializer(
    "EmailAccepted",
    {
        "message_id": serializers.UUIDField(),
        "conversation_id": serializers.UUIDField(required=False),
        "proxy_address": serializers.EmailField(required=False),
    },
)


class SendEmailView(APIView):
    serializer_class = SendEmailSerializer

    def get_serializer(self, *args, **kwargs):
        return self.serializer_class(*args, context={"request": self.request}, **kwargs)

    @extend_schema(
        request=SendEmailSerializer,
        responses={201: SENT_RESPONSE, 400: OpenApiResponse(description="{'errors': [...]}")},
    )
    def post(self, request):
        """Accept a tracked email for delivery. 201 once it is stored and queued."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("proxy_domain", None)
        message = message_accept(account=request.user.account, **data)
        return Response({"message_id": str(message.message_id)}, status=status.HTTP_201_CREATED)


class EmailDetailView(APIView):
    @extend_schema(responses={200: OpenApiResponse(description="the message")})
    def get(self, request, message_id: str):
        """One message of the caller's account: its search fields, subject, delivery attempts
        and tracking events."""
        account = request.user.account
        message = access.get_message_for_account(account, message_id)
        return Response(message_detail(message, account=account))
