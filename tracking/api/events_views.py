"""`/rest/v1/webhooks` and `/rest/v1/suppressions`: thin DRF views over the services."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from tracking import access
from tracking.api.events_serializers import (
    EVENT_TYPES,
    PageParamsError,
    SuppressionListSerializer,
    SuppressionSerializer,
    WebhookSerializer,
    delivery_data,
    page_body,
    parse_date,
    parse_page,
    suppression_data,
    webhook_data,
)
from tracking.models import Suppression, SuppressionReason, WebhookDelivery, WebhookEndpoint
from tracking.services import suppressions
from tracking.webhooks import services as webhooks
from tracking.webhooks.services import WebhookError

WEBHOOK = inline_serializer(
    "Webhook",
    {
        "webhook_id": serializers.UUIDField(),
        "url": serializers.URLField(),
        "events": serializers.ListField(child=serializers.ChoiceField(choices=EVENT_TYPES)),
        "description": serializers.CharField(),
        "enabled": serializers.BooleanField(),
        "created_date": serializers.CharField(),
        "disabled_reason": serializers.CharField(required=False),
        "secret": serializers.CharField(
            required=False, help_text="Only when created, and after rotate_secret."
        ),
    },
)
DELIVERY = inline_serializer(
    "WebhookDelivery",
    {
        "delivery_id": serializers.IntegerField(),
        "event_id": serializers.CharField(),
        "type": serializers.CharField(),
        "created_date": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["pending", "delivered", "failed"]),
        "delivered": serializers.BooleanField(),
        "attempt_count": serializers.IntegerField(),
        "last_attempt_date": serializers.CharField(required=False),
        "last_status_code": serializers.IntegerField(required=False),
        "last_error": serializers.CharField(required=False),
        "next_attempt_date": serializers.CharField(required=False),
    },
)
SUPPRESSION = inline_serializer(
    "Suppression",
    {
        "email_address": serializers.EmailField(),
        "reason": serializers.ChoiceField(choices=SuppressionReason.values),
        "created_date": serializers.CharField(),
        "smtp_code": serializers.IntegerField(required=False),
        "enhanced_code": serializers.CharField(required=False),
        "smtp_text": serializers.CharField(required=False),
        "message_id": serializers.UUIDField(required=False),
    },
)


def page_of(name: str, item) -> serializers.Serializer:
    return inline_serializer(
        name,
        {
            "current_page": serializers.IntegerField(),
            "total_pages": serializers.IntegerField(),
            "total_results": serializers.IntegerField(),
            "results": serializers.ListField(child=item),
        },
    )


PAGE_PARAMETERS = [
    OpenApiParameter("page", OpenApiTypes.INT, description="from 1"),
    OpenApiParameter("limit", OpenApiTypes.INT, description="1 to 1000"),
]


def _validated(serializer: serializers.Serializer) -> dict:
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class WebhookViewSet(viewsets.ViewSet):
    """The account's webhook endpoints."""

    lookup_field = "webhook_id"
    lookup_value_regex = "[^/]+"

    @property
    def account(self):
        return self.request.user.account

    def _endpoint(self) -> WebhookEndpoint:
        return access.get_webhook_for_account(self.account, self.kwargs["webhook_id"])

    @extend_schema(responses={200: serializers.ListSerializer(child=WEBHOOK)})
    def list(self, request):
        endpoints = WebhookEndpoint.objects.for_account(self.account).order_by("created_at", "pk")
        return Response([webhook_data(e) for e in endpoints])

    @extend_schema(request=WebhookSerializer, responses={201: WEBHOOK})
    def create(self, request):
        """Add an endpoint. Its `secret` is in this answer only (and after a rotation)."""
        data = _validated(WebhookSerializer(data=request.data))
        data.pop("enabled", None)
        try:
            endpoint = webhooks.webhook_create(account=self.account, **data)
        except WebhookError as exc:
            raise exceptions.ValidationError(exc.errors) from None
        return Response(webhook_data(endpoint, secret=True), status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: WEBHOOK})
    def retrieve(self, request, webhook_id=None):
        return Response(webhook_data(self._endpoint()))

    @extend_schema(request=WebhookSerializer, responses={200: WEBHOOK})
    def partial_update(self, request, webhook_id=None):
        """Change the URL, the events, the description, or enable/disable the endpoint."""
        endpoint = self._endpoint()
        data = _validated(WebhookSerializer(data=request.data, partial=True))
        endpoint = webhooks.webhook_update(endpoint=endpoint, **data)
        return Response(webhook_data(endpoint))

    @extend_schema(responses={204: None})
    def destroy(self, request, webhook_id=None):
        webhooks.webhook_delete(endpoint=self._endpoint())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: WEBHOOK})
    @action(detail=True, methods=["post"])
    def rotate_secret(self, request, webhook_id=None):
        """A new secret; the old one keeps signing alongside it for 24 hours."""
        endpoint = webhooks.webhook_rotate_secret(endpoint=self._endpoint())
        return Response(webhook_data(endpoint, secret=True))

    @extend_schema(request=None, responses={202: DELIVERY})
    @action(detail=True, methods=["post"])
    def test(self, request, webhook_id=None):
        """Send a `webhook.test` event to the endpoint now."""
        delivery = webhooks.webhook_test(endpoint=self._endpoint())
        return Response(delivery_data(delivery), status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=PAGE_PARAMETERS, responses={200: page_of("WebhookDeliveries", DELIVERY)}
    )
    @action(detail=True, methods=["get"])
    def deliveries(self, request, webhook_id=None):
        """The endpoint's deliveries, newest first."""
        endpoint = self._endpoint()
        try:
            page, limit = parse_page(request.query_params, allowed={"page", "limit"})
        except PageParamsError as exc:
            raise exceptions.ValidationError(exc.errors) from None
        rows = (
            WebhookDelivery.objects.filter(endpoint=endpoint)
            .select_related("event")
            .order_by("-created_at", "-pk")
        )
        return Response(page_body(rows, page=page, limit=limit, shape=delivery_data))


SUPPRESSION_PARAMETERS = [
    OpenApiParameter("email_address", OpenApiTypes.STR, description="exact, any case"),
    OpenApiParameter("reason", OpenApiTypes.STR, enum=SuppressionReason.values),
    OpenApiParameter("start_date", OpenApiTypes.STR, description="added on or after (UTC)"),
    OpenApiParameter("end_date", OpenApiTypes.STR, description="added on or before (UTC)"),
    *PAGE_PARAMETERS,
]


class SuppressionListView(APIView):
    @extend_schema(
        parameters=SUPPRESSION_PARAMETERS,
        responses={200: page_of("Suppressions", SUPPRESSION)},
        operation_id="suppressions_list",
    )
    def get(self, request):
        """The account's suppressed addresses, newest first, paged like search."""
        params = request.query_params
        allowed = {"page", "limit", "email_address", "reason", "start_date", "end_date"}
        rows = Suppression.objects.for_account(request.user.account).select_related("message")
        try:
            page, limit = parse_page(params, allowed=allowed)
            if params.get("email_address"):
                rows = rows.filter(email_address=suppressions.address_key(params["email_address"]))
            if params.get("reason"):
                if params["reason"] not in SuppressionReason.values:
                    choices = ", ".join(SuppressionReason.values)
                    raise PageParamsError([f"reason must be one of {choices}"])
                rows = rows.filter(reason=params["reason"])
            if params.get("start_date"):
                rows = rows.filter(
                    created_at__gte=parse_date(params["start_date"], "start_date", end=False)
                )
            if params.get("end_date"):
                rows = rows.filter(
                    created_at__lte=parse_date(params["end_date"], "end_date", end=True)
                )
        except PageParamsError as exc:
            raise exceptions.ValidationError(exc.errors) from None
        rows = rows.order_by("-created_at", "-pk")
        return Response(page_body(rows, page=page, limit=limit, shape=suppression_data))

    @extend_schema(
        request=SuppressionSerializer,
        responses={201: SUPPRESSION},
        operation_id="suppressions_add",
        description="One address, or a list of up to 1,000 (then the answer is a list).",
    )
    def post(self, request):
        """Suppress an address (or a list of them). An address already suppressed keeps its
        reason."""
        account = request.user.account
        if isinstance(request.data, list):
            serializer = SuppressionListSerializer(child=SuppressionSerializer(), data=request.data)
            entries = [(e["email_address"], e["reason"]) for e in _validated(serializer)]
            rows = suppressions.suppressions_add(account=account, entries=entries)
            return Response([suppression_data(s) for s in rows], status=status.HTTP_201_CREATED)
        entry = _validated(SuppressionSerializer(data=request.data))
        suppression, _ = suppressions.suppression_add(account=account, **entry)
        return Response(suppression_data(suppression), status=status.HTTP_201_CREATED)


class SuppressionDetailView(APIView):
    @extend_schema(responses={204: None}, operation_id="suppressions_delete")
    def delete(self, request, email_address: str):
        """Remove the address from the list: the next send to it goes through."""
        suppression = access.get_suppression_for_account(request.user.account, email_address)
        suppressions.suppression_delete(suppression=suppression)
        return Response(status=status.HTTP_204_NO_CONTENT)
