"""The Webhooks page (endpoints, their recent deliveries with payloads, test, rotate, retry)
and the Suppressions page (search, add, remove)."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from portal.decorators import account_required
from portal.forms import SuppressionForm, WebhookForm
from tracking import access
from tracking.events import event_payload
from tracking.models import Suppression, SuppressionReason, WebhookDelivery, WebhookEndpoint
from tracking.services import suppressions
from tracking.webhooks import services as webhooks

DELIVERIES_SHOWN = 50
SUPPRESSIONS_PER_PAGE = 50


@account_required
def webhook_list(request: HttpRequest) -> HttpResponse:
    endpoints = WebhookEndpoint.objects.for_account(request.account).order_by("created_at")
    return render(request, "portal/webhooks.html", {"endpoints": endpoints})


@account_required
def webhook_create(request: HttpRequest) -> HttpResponse:
    form = WebhookForm(request.POST or None, account=request.account)
    if form.is_valid() and (endpoint := form.save()):
        return _secret_page(request, endpoint, "Webhook added")
    return _form(request, form, "New webhook")


@account_required
def webhook_edit(request: HttpRequest, webhook_id: str) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    form = WebhookForm(request.POST or None, account=request.account, endpoint=endpoint)
    if form.is_valid() and form.save():
        messages.success(request, "Webhook saved.")
        return redirect("portal:webhook_detail", webhook_id=endpoint.webhook_id)
    return _form(request, form, f"Edit webhook {endpoint.url}")


def _form(request: HttpRequest, form: WebhookForm, title: str) -> HttpResponse:
    return render(
        request,
        "portal/form_page.html",
        {"form": form, "title": title, "cancel": reverse("portal:webhooks"), "submit": "Save"},
        status=400 if form.is_bound else 200,
    )


def _secret_page(request: HttpRequest, endpoint: WebhookEndpoint, title: str) -> HttpResponse:
    return render(request, "portal/webhook_secret.html", {"endpoint": endpoint, "title": title})


@account_required
def webhook_detail(request: HttpRequest, webhook_id: str) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    deliveries = list(
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("event")
        .order_by("-created_at", "-pk")[:DELIVERIES_SHOWN]
    )
    for delivery in deliveries:
        delivery.payload = json.dumps(event_payload(delivery.event), indent=2, ensure_ascii=False)
    return render(
        request, "portal/webhook_detail.html", {"endpoint": endpoint, "deliveries": deliveries}
    )


@require_POST
@account_required
def webhook_toggle(request: HttpRequest, webhook_id: str) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    webhooks.webhook_update(endpoint=endpoint, enabled=not endpoint.enabled)
    messages.success(request, f"Webhook {'enabled' if endpoint.enabled else 'disabled'}.")
    return redirect("portal:webhook_detail", webhook_id=endpoint.webhook_id)


@require_POST
@account_required
def webhook_rotate(request: HttpRequest, webhook_id: str) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    return _secret_page(request, webhooks.webhook_rotate_secret(endpoint=endpoint), "New secret")


@require_POST
@account_required
def webhook_test(request: HttpRequest, webhook_id: str) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    webhooks.webhook_test(endpoint=endpoint)
    messages.success(request, "A webhook.test event is on its way; reload to see its delivery.")
    return redirect("portal:webhook_detail", webhook_id=endpoint.webhook_id)


@require_POST
@account_required
def webhook_delete(request: HttpRequest, webhook_id: str) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    webhooks.webhook_delete(endpoint=endpoint)
    messages.success(request, f"Webhook {endpoint.url} deleted.")
    return redirect("portal:webhooks")


@require_POST
@account_required
def webhook_delivery_retry(request: HttpRequest, webhook_id: str, delivery_pk: int) -> HttpResponse:
    endpoint = access.get_webhook_for_account(request.account, webhook_id)
    delivery = access.get_webhook_delivery_for_endpoint(endpoint, delivery_pk)
    webhooks.webhook_delivery_retry(delivery=delivery)
    messages.success(request, f"Delivery of {delivery.event.public_id} will be tried again now.")
    return redirect("portal:webhook_detail", webhook_id=endpoint.webhook_id)


@account_required
def suppression_list(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    reason = request.GET.get("reason", "")
    found = Suppression.objects.for_account(request.account).select_related("message")
    if query:
        found = found.filter(email_address__icontains=query.lower())
    if reason in SuppressionReason.values:
        found = found.filter(reason=reason)
    page = Paginator(found.order_by("-created_at", "-pk"), SUPPRESSIONS_PER_PAGE).get_page(
        request.GET.get("page")
    )
    form = SuppressionForm(request.POST or None, account=request.account)
    if form.is_valid():
        suppression = form.save()
        messages.success(request, f"{suppression.email_address} is suppressed.")
        return redirect("portal:suppressions")
    return render(
        request,
        "portal/suppressions.html",
        {
            "page": page,
            "q": query,
            "reason": reason,
            "reasons": SuppressionReason.choices,
            "form": form,
            "querystring": urlencode({k: v for k, v in (("q", query), ("reason", reason)) if v}),
        },
        status=400 if form.is_bound else 200,
    )


@require_POST
@account_required
def suppression_remove(request: HttpRequest) -> HttpResponse:
    suppression = access.get_suppression_for_account(
        request.account, request.POST.get("email_address", "")
    )
    suppressions.suppression_delete(suppression=suppression)
    messages.success(request, f"{suppression.email_address} removed: mail to it goes out again.")
    return redirect("portal:suppressions")
