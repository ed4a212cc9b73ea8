"""The nouns of the product: accounts, the directory (nodes, links, contacts) and messages."""

from tracking.models.accounts import Account, ApiCredential, DeliveryTransport, User
from tracking.models.directory import AliasDomain, Contact, Link, Node
from tracking.models.events import (
    TEST_EVENT_TYPE,
    Event,
    EventType,
    Suppression,
    SuppressionReason,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
)
from tracking.models.messages import (
    Attachment,
    BounceType,
    DeliveryAttempt,
    Direction,
    Disposition,
    EventSource,
    Message,
    ReadDisposition,
    TrackingEvent,
)
from tracking.models.signing import DkimKey
from tracking.models.transports import EspWebhookRefusal
from tracking.models.worker import WorkerLease

__all__ = [
    "TEST_EVENT_TYPE",
    "Account",
    "BounceType",
    "Event",
    "EventType",
    "Suppression",
    "SuppressionReason",
    "WebhookDelivery",
    "WebhookDeliveryStatus",
    "WebhookEndpoint",
    "AliasDomain",
    "ApiCredential",
    "Attachment",
    "Contact",
    "DeliveryAttempt",
    "DeliveryTransport",
    "EspWebhookRefusal",
    "DkimKey",
    "Direction",
    "Disposition",
    "EventSource",
    "Link",
    "Message",
    "Node",
    "ReadDisposition",
    "TrackingEvent",
    "User",
    "WorkerLease",
]
