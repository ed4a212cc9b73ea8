"""Input and output of the nodes, links and contacts endpoints. They validate and shape; the
services in tracking.services.directory do the writing."""

from __future__ import annotations

from rest_framework import serializers

from tracking.headers import header_value_validator
from tracking.models import Contact, Link, Node
from tracking.models.directory import directory_id_validator
from tracking.services import directory

ID_FIELD = {"max_length": 100, "allow_blank": False, "validators": [directory_id_validator]}


class AccountScopedMixin:
    @property
    def account(self):
        return self.context["request"].user.account

    def check_unique(self, model, field: str, value: str) -> str:
        others = model.objects.filter(account=self.account, **{field: value})
        if self.instance is not None:
            others = others.exclude(pk=self.instance.pk)
        if others.exists():
            raise serializers.ValidationError("already exists", code="unique")
        return value


class NodeSerializer(AccountScopedMixin, serializers.Serializer):
    node_id = serializers.CharField(**ID_FIELD)
    node_name = serializers.CharField(max_length=200)
    node_type = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")

    def validate_node_id(self, value: str) -> str:
        return self.check_unique(Node, "node_id", value)

    def create(self, validated_data) -> Node:
        return directory.node_create(account=self.account, **validated_data)

    def update(self, instance: Node, validated_data) -> Node:
        return directory.node_update(node=instance, **validated_data)


class AccountSlugField(serializers.SlugRelatedField):
    """A reference by the customer's own id, resolved inside the caller's account only."""

    default_error_messages = {
        "does_not_exist": "does not exist",
        "invalid": "is not a valid id",
    }

    def get_queryset(self):
        return self.queryset.filter(account=self.context["request"].user.account)


class LinkSerializer(AccountScopedMixin, serializers.Serializer):
    link_id = serializers.CharField(**ID_FIELD)
    node_id = AccountSlugField(source="node", slug_field="node_id", queryset=Node.objects.all())
    link_name = serializers.CharField(max_length=200)
    link_type = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    email_address = serializers.EmailField(read_only=True, allow_null=True)
    destination_contact_id = AccountSlugField(
        source="destination",
        slug_field="contact_id",
        queryset=Contact.objects.all(),
        required=False,
        allow_null=True,
        default=None,
    )

    def validate_link_id(self, value: str) -> str:
        return self.check_unique(Link, "link_id", value)

    def create(self, validated_data) -> Link:
        return directory.link_create(account=self.account, **validated_data)

    def update(self, instance: Link, validated_data) -> Link:
        return directory.link_update(link=instance, **validated_data)


class ContactSerializer(AccountScopedMixin, serializers.Serializer):
    contact_id = serializers.CharField(**ID_FIELD, required=False)
    # Forwarded mail may name the contact in its To header.
    name = serializers.CharField(max_length=200, validators=[header_value_validator])
    email = serializers.EmailField(
        required=False, allow_blank=True, default="", validators=[header_value_validator]
    )

    def validate_contact_id(self, value: str) -> str:
        return self.check_unique(Contact, "contact_id", value)

    def create(self, validated_data) -> Contact:
        return directory.contact_create(account=self.account, **validated_data)

    def update(self, instance: Contact, validated_data) -> Contact:
        return directory.contact_update(contact=instance, **validated_data)
