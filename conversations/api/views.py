"""`POST /rest/v1/email/address/proxy`: open one or more conversations at once."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from conversations.api.serializers import (
    PROXY_BATCH_MAX,
    ProxyAddressSerializer,
)
from conversations.services import conversation_open, own_domains
from tracking.api.exceptions import error_list


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
