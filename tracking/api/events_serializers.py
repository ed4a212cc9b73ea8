"""Input and output of the webhooks and suppressions endpoints. They validate and shape; the
services (tracking.webhooks.services, tracking.services.suppressions) act."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from rest_framework import serializers

from tracking.api.fields import CharField
from tracking.dates import date_parse, date_text
from tracking.events import event_payload
from tracking.models import (
    EventType,
    Suppression,
    SuppressionReason,
    WebhookDelivery,
    WebhookEndpoint,
)
from tracking.services.suppressions import MAX_PER_REQUEST
from tracking.webhooks.addresses import WebhookUrlError, webhook_url_check
from tracking.webhooks.services import WebhookError, event_types_check

MAX_LIMIT = 1000


def without_empty(values: dict[str, Any]) -> dict[str, Any]:
    """Absent values left out, as the search results do."""
    return {k: v for k, v in values.items() if v not in (None, "")}


# --- Webhooks -------------------------------------------------------------------------------


class WebhookSerializer(serializers.Serializer):
    """`POST /rest/v1/webhooks` and `PATCH /rest/v1/webhooks/{webhook_id}` input."""

    url = CharField(max_length=2000)
    events = serializers.ListField(
        child=CharField(max_length=40), required=False, default=list, max_length=50
    )
    description = CharField(max_length=500, required=False, allow_blank=True, default="")
    enabled = serializers.BooleanField(required=False)

    def validate_url(self, value: str) -> str:
        try:
            return webhook_url_check(value)
        except WebhookUrlError as exc:
            raise serializers.ValidationError(str(exc), code="invalid_url") from None

    def validate_events(self, value: list[str]) -> list[str]:
        try:
            return event_types_check(value)
        except WebhookError as exc:
            # "has unknown event types: ...": follows the field name.
            raise serializers.ValidationError(exc.errors["events"], code="unknown_event") from None


def webhook_data(endpoint: WebhookEndpoint, *, secret: bool = False) -> dict[str, Any]:
    data = {
        "webhook_id": str(endpoint.webhook_id),
        "url": endpoint.url,
        "events": endpoint.events,
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "created_date": date_text(endpoint.created_at),
    }
    if endpoint.disabled_reason:
        data["disabled_reason"] = endpoint.disabled_reason
    if secret:
        data["secret"] = endpoint.secret
    return data


def delivery_data(delivery: WebhookDelivery, *, payload: bool = False) -> dict[str, Any]:
    data = without_empty(
        {
            "delivery_id": delivery.pk,
            "event_id": delivery.event.public_id,
            "type": delivery.event.type,
            "created_date": date_text(delivery.created_at),
            "status": delivery.status,
            "delivered": delivery.status == "delivered",
            "attempt_count": delivery.attempt_count,
            "last_attempt_date": date_text(delivery.last_attempt_at),
            "last_status_code": delivery.last_status_code,
            "last_error": delivery.last_error,
            "next_attempt_date": date_text(delivery.next_attempt_at)
            if delivery.status == "pending"
            else None,
        }
    )
    if payload:
        data["payload"] = event_payload(delivery.event)
    return data


# --- Suppressions ---------------------------------------------------------------------------


class SuppressionSerializer(serializers.Serializer):
    email_address = serializers.EmailField(max_length=254)
    reason = serializers.ChoiceField(
        choices=SuppressionReason.values, required=False, default=SuppressionReason.MANUAL
    )


class SuppressionListSerializer(serializers.ListSerializer):
    def to_internal_value(self, data):
        if isinstance(data, list) and not data:
            raise serializers.ValidationError({"suppressions": "cannot be empty"})
        if isinstance(data, list) and len(data) > MAX_PER_REQUEST:
            raise serializers.ValidationError(
                {"suppressions": f"are at most {MAX_PER_REQUEST} in one request, not {len(data)}"}
            )
        return super().to_internal_value(data)


def suppression_data(suppression: Suppression) -> dict[str, Any]:
    message = suppression.message
    return without_empty(
        {
            "email_address": suppression.email_address,
            "reason": suppression.reason,
            "created_date": date_text(suppression.created_at),
            "smtp_code": suppression.smtp_code,
            "enhanced_code": suppression.enhanced_code,
            "smtp_text": suppression.smtp_text,
            "message_id": str(message.message_id) if message else None,
        }
    )


class PageParamsError(ValueError):
    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_page(params, *, allowed: set[str], default_limit: int = 100) -> tuple[int, int]:
    """`page` (from 1) and `limit` (1 to MAX_LIMIT) of a list request; unknown parameters are
    refused, as search refuses them."""
    errors = [f"{name} is not a parameter here" for name in params if name not in allowed]
    numbers = {}
    for name, default, top in (("page", 1, 1_000_000), ("limit", default_limit, MAX_LIMIT)):
        raw = str(params.get(name, "") or "").strip()
        if not raw:
            numbers[name] = default
        elif raw.isdigit() and 1 <= int(raw) <= top:
            numbers[name] = int(raw)
        else:
            errors.append(f"{name} must be a whole number from 1 to {top}")
    if errors:
        raise PageParamsError(errors)
    return numbers["page"], numbers["limit"]


def parse_date(value: str, name: str, *, end: bool) -> datetime:
    """`YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` (then the day's start, or its end for `end`)."""
    if (parsed := date_parse(value, end=end)) is not None:
        return parsed
    raise PageParamsError([f"{name} must be YYYY-MM-DD HH:MM:SS or YYYY-MM-DD"])


def page_body(rows: QuerySet, *, page: int, limit: int, shape) -> dict[str, Any]:
    """The search's page shape: current_page, total_pages, total_results, results."""
    total = rows.count()
    results = rows[(page - 1) * limit : page * limit]
    return {
        "current_page": page,
        "total_pages": math.ceil(total / limit),
        "total_results": total,
        "results": [shape(row) for row in results],
    }


EVENT_TYPES = list(EventType.values)
