"""Portal pages. They read through the apps' querysets and access helpers and act through
their services; each view reads, calls one service, then renders or redirects."""

from portal.views.communications import communications, communications_export
from portal.views.directory import (
    contact_create,
    contact_delete,
    contact_edit,
    contacts,
    home,
    link_create,
    link_destination,
    link_edit,
    link_generate_alias,
    node_create,
    node_edit,
    nodes,
)
from portal.views.events import (
    suppression_list,
    suppression_remove,
    webhook_create,
    webhook_delete,
    webhook_delivery_retry,
    webhook_detail,
    webhook_edit,
    webhook_list,
    webhook_rotate,
    webhook_test,
    webhook_toggle,
)
from portal.views.messages import message_detail, message_preview

__all__ = [
    "communications",
    "communications_export",
    "contact_create",
    "contact_delete",
    "contact_edit",
    "contacts",
    "home",
    "link_create",
    "link_destination",
    "link_edit",
    "link_generate_alias",
    "message_detail",
    "message_preview",
    "node_create",
    "node_edit",
    "nodes",
    "suppression_list",
    "suppression_remove",
    "webhook_create",
    "webhook_delete",
    "webhook_delivery_retry",
    "webhook_detail",
    "webhook_edit",
    "webhook_list",
    "webhook_rotate",
    "webhook_test",
    "webhook_toggle",
]
