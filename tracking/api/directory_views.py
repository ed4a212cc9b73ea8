"""Nodes, links and contacts: DRF viewsets looked up by the customer's own ids."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from tracking import access
from tracking.api.directory_serializers import ContactSerializer, LinkSerializer, NodeSerializer
from tracking.models import Contact, Link, Node
from tracking.services import directory


class AccountViewSet(viewsets.ModelViewSet):
    """List, create, read, replace, update and delete the caller's own objects."""

    lookup_value_regex = "[^/]+"
    get_for_account = None  # the access helper of the resource
    delete_service = None  # the delete service of the resource (tracking/services/directory.py)

    @property
    def account(self):
        return self.request.user.account

    def get_object(self):
        return type(self).get_for_account(self.account, self.kwargs[self.lookup_field])

    def perform_destroy(self, instance) -> None:
        type(self).delete_service(instance)


class NodeViewSet(AccountViewSet):
    serializer_class = NodeSerializer
    lookup_field = "node_id"
    get_for_account = staticmethod(access.get_node_for_account)
    delete_service = staticmethod(lambda node: directory.node_delete(node=node))

    def get_queryset(self):
        return Node.objects.for_account(self.account).order_by("node_id")


class LinkViewSet(AccountViewSet):
    serializer_class = LinkSerializer
    lookup_field = "link_id"
    get_for_account = staticmethod(access.get_link_for_account)
    delete_service = staticmethod(lambda link: directory.link_delete(link=link))

    def get_queryset(self):
        return (
            Link.objects.for_account(self.account)
            .select_related("node", "destination")
            .order_by("link_id")
        )

    @extend_schema(request=None, responses={200: LinkSerializer, 201: LinkSerializer})
    @action(detail=True, methods=["post"], url_path="email_address")
    def email_address(self, request, link_id=None):
        """Generate the link's alias address "[NodeName]_[LinkName]@ALIAS_DOMAIN"."""
        link, created = directory.link_generate_alias(link=self.get_object())
        return Response(
            LinkSerializer(link, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class ContactViewSet(AccountViewSet):
    serializer_class = ContactSerializer
    lookup_field = "contact_id"
    get_for_account = staticmethod(access.get_contact_for_account)
    delete_service = staticmethod(lambda contact: directory.contact_delete(contact=contact))

    def get_queryset(self):
        return Contact.objects.for_account(self.account).order_by("contact_id")
