"""One access helper per resource: the caller's own object, or 404.

An id that belongs to another account is answered exactly like one that does not exist, so
nothing leaks across accounts. The REST API and the portal both go through these.
"""

from __future__ import annotations

import uuid

from django.http import Http404

from tracking.models import (
    Account,
    Contact,
    Link,
    Message,
    Node,
    Suppression,
    WebhookDelivery,
    WebhookEndpoint,
)


def get_node_for_account(account: Account, node_id: str) -> Node:
    node = Node.objects.filter(account=account, node_id=node_id).first()
    if node is None:
        raise Http404("node_id does not exist")
    return node


def get_link_for_account(account: Account, link_id: str) -> Link:
    link = (
        Link.objects.select_related("node", "destination")
        .filter(account=account, link_id=link_id)
        .first()
    )
    if link is None:
        raise Http404("link_id does not exist")
    return link


def get_contact_for_account(account: Account, contact_id: str) -> Contact:
    contact = Contact.objects.filter(account=account, contact_id=contact_id).first()
    if contact is None:
        raise Http404("contact_id does not exist")
    return contact


def get_message_for_account(account: Account, message_id: str | uuid.UUID) -> Message:
    try:
        message_uuid = uuid.UUID(str(message_id))
    except ValueError:
        raise Http404("message_id does not exist") from None
    message = (
        Message.objects.select_related("link__node")
        .filter(account=account, message_id=message_uuid)
        .first()
    )
    if message is None:
        raise Http404("message_id does not exist")
    return message


def get_webhook_for_account(account: Account, webhook_id: str | uuid.UUID) -> WebhookEndpoint:
    try:
        webhook_uuid = uuid.UUID(str(webhook_id))
    except ValueError:
        raise Http404("webhook_id does not exist") from None
    endpoint = WebhookEndpoint.objects.filter(account=account, webhook_id=webhook_uuid).first()
    if endpoint is None:
        raise Http404("webhook_id does not exist")
    return endpoint


def get_webhook_delivery_for_endpoint(
    endpoint: WebhookEndpoint, delivery_pk: int | str
) -> WebhookDelivery:
    try:
        pk = int(delivery_pk)
    except (TypeError, ValueError):
        raise Http404("delivery does not exist") from None
    delivery = (
        WebhookDelivery.objects.select_related("event").filter(endpoint=endpoint, pk=pk).first()
    )
    if delivery is None:
        raise Http404("delivery does not exist")
    return delivery


def get_suppression_for_account(account: Account, email_address: str) -> Suppression:
    suppression = Suppression.objects.filter(
        account=account, email_address=email_address.strip().lower()
    ).first()
    if suppression is None:
        raise Http404("email_address is not suppressed")
    return suppression
