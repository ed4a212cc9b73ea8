"""Portal pages. They read through the apps' querysets and access helpers and act through
their services; each view reads, calls one service, then renders or redirects."""

from portal.views.communications import communications, communications_export
from portal.views.directory import (
    contact_delete,
    contact_form,
    contacts,
    home,
    link_destination,
    link_form,
    link_generate_alias,
    node_form,
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
    "contact_delete",
    "contact_form",
    "contacts",
    "home",
    "link_destination",
    "link_form",
    "link_generate_alias",
    "message_detail",
    "message_preview",
    "node_form",
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
