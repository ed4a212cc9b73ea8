"""The customer's directory: nodes (groups), links (items), contacts and alias domains."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

from tracking.models.accounts import Account

# The customer's own ids (node_id, link_id, contact_id) are path segments of the API and the
# portal (/rest/v1/links/{link_id}), so they hold only characters a URL carries as they are
# (RFC 3986's unreserved set) and start with a letter or digit (never "." or ".."). The spec's
# examples (1234, abc123, xyz789) fit. Checked when an id is created or changed, by the API,
# the portal and the admin alike.
directory_id_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._~-]*\Z",
    "may contain only letters, digits and the characters - _ . ~, and must start with a "
    "letter or digit",
    code="invalid_id",
)


class AccountQuerySet(models.QuerySet):
    def for_account(self, account: Account) -> AccountQuerySet:
        return self.filter(account=account)


class Node(models.Model):
    """A "Group": the customer's grouping of links, known by the customer's own `node_id`."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="nodes")
    node_id = models.CharField(max_length=100)
    node_name = models.CharField(max_length=200)
    node_type = models.CharField(max_length=100, blank=True)

    objects = AccountQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "node_id"], name="node_id_unique_per_account"
            )
        ]
        ordering = ["node_name", "node_id"]

    def __str__(self) -> str:
        return f"{self.node_name} ({self.node_id})"


class Contact(models.Model):
    """Someone alias mail can be forwarded to."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="contacts")
    contact_id = models.CharField(max_length=100)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)

    objects = AccountQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "contact_id"], name="contact_id_unique_per_account"
            )
        ]
        ordering = ["name", "contact_id"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.email else self.name


class Link(models.Model):
    """An "Item" of a node; tracked email is associated with a link, and a link may have an
    alias address whose mail is forwarded to its destination contact."""

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="links")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="links")
    link_id = models.CharField(max_length=100)
    link_name = models.CharField(max_length=200)
    link_type = models.CharField(max_length=100, blank=True)
    email_address = models.EmailField(max_length=254, null=True, blank=True, unique=True)
    destination = models.ForeignKey(
        Contact, null=True, blank=True, on_delete=models.PROTECT, related_name="links"
    )

    objects = AccountQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["account", "link_id"], name="link_id_unique_per_account"
            )
        ]
        ordering = ["link_name", "link_id"]

    def __str__(self) -> str:
        return f"{self.link_name} ({self.link_id})"


class AliasDomain(models.Model):
    """A domain link aliases are generated on: shared by every account, or private to one."""

    domain = models.CharField(max_length=253, unique=True)
    account = models.ForeignKey(
        Account, null=True, blank=True, on_delete=models.CASCADE, related_name="alias_domains"
    )

    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain

    @classmethod
    def usable_by(cls, account: Account) -> models.QuerySet[AliasDomain]:
        return cls.objects.filter(Q(account__isnull=True) | Q(account=account))
