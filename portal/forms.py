"""Portal input: plain Django forms. They validate and then call the tracking services;
ids are the customer's own strings, so uniqueness is checked within the account."""

from __future__ import annotations

from datetime import date, timedelta

from django import forms
from django.db import IntegrityError, transaction
from django.utils import timezone

from tracking.headers import header_value_validator
from tracking.models import (
    Account,
    Contact,
    Disposition,
    EventType,
    Link,
    Node,
    ReadDisposition,
    SuppressionReason,
    WebhookEndpoint,
)
from tracking.models.directory import directory_id_validator
from tracking.services import directory, suppressions
from tracking.webhooks import services as webhook_services
from tracking.webhooks.addresses import WebhookUrlError, webhook_url_check

ID_HELP = "Your own identifier, unique in your account: letters, digits, - _ . ~"


class AccountForm(forms.Form):
    """A form bound to the account it reads from and writes to."""

    def __init__(self, *args, account: Account, **kwargs):
        self.account = account
        super().__init__(*args, **kwargs)

    def _unique_id(self, model, field: str, instance) -> str:
        value = self.cleaned_data[field]
        others = model.objects.for_account(self.account).filter(**{field: value})
        if instance is not None:
            others = others.exclude(pk=instance.pk)
        if others.exists():
            raise forms.ValidationError(f"{field} {value} already exists")
        return value

    def save_or_report(self, write) -> object | None:
        """Run a service; a unique-constraint race ends as a form error, not a 500. (The
        savepoint keeps an enclosing transaction usable after the failed INSERT.)"""
        try:
            with transaction.atomic():
                return write()
        except IntegrityError:
            self.add_error(None, "This id was taken a moment ago; choose another.")
            return None


def _id_field(label: str, *, required: bool = True) -> forms.CharField:
    return forms.CharField(
        label=label,
        max_length=100,
        required=required,
        help_text=ID_HELP,
        validators=[directory_id_validator],
    )


class NodeForm(AccountForm):
    node_id = _id_field("Node id")
    node_name = forms.CharField(label="Name", max_length=200)
    node_type = forms.CharField(label="Type", max_length=100, required=False)

    def __init__(self, *args, node: Node | None = None, **kwargs):
        self.node = node
        if node is not None:
            kwargs.setdefault(
                "initial",
                {"node_id": node.node_id, "node_name": node.node_name, "node_type": node.node_type},
            )
        super().__init__(*args, **kwargs)

    def clean_node_id(self) -> str:
        return self._unique_id(Node, "node_id", self.node)

    def save(self) -> Node | None:
        if self.node is None:
            return self.save_or_report(
                lambda: directory.node_create(account=self.account, **self.cleaned_data)
            )
        return self.save_or_report(
            lambda: directory.node_update(node=self.node, **self.cleaned_data)
        )


def contact_choices(account: Account):
    """Contacts alias mail can be forwarded to: those with an email address."""
    return Contact.objects.for_account(account).exclude(email="")


class DestinationField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Contact) -> str:
        return f"{obj.name} <{obj.email}>"


def _destination_field() -> DestinationField:
    return DestinationField(
        queryset=Contact.objects.none(),
        to_field_name="contact_id",
        required=False,
        empty_label="No Email Destination",
        label="Email destination",
        help_text="The contact mail sent to this link's alias address is forwarded to.",
    )


class LinkForm(AccountForm):
    node = forms.ModelChoiceField(queryset=Node.objects.none(), to_field_name="node_id")
    link_id = _id_field("Link id")
    link_name = forms.CharField(label="Name", max_length=200)
    link_type = forms.CharField(label="Type", max_length=100, required=False)
    destination = _destination_field()

    def __init__(self, *args, link: Link | None = None, node: Node | None = None, **kwargs):
        self.link = link
        if link is not None:
            kwargs.setdefault(
                "initial",
                {
                    "node": link.node.node_id,
                    "link_id": link.link_id,
                    "link_name": link.link_name,
                    "link_type": link.link_type,
                    "destination": link.destination.contact_id if link.destination else None,
                },
            )
        elif node is not None:
            kwargs.setdefault("initial", {"node": node.node_id})
        super().__init__(*args, **kwargs)
        self.fields["node"].queryset = Node.objects.for_account(self.account)
        self.fields["destination"].queryset = contact_choices(self.account)

    def clean_link_id(self) -> str:
        return self._unique_id(Link, "link_id", self.link)

    def save(self) -> Link | None:
        if self.link is None:
            return self.save_or_report(
                lambda: directory.link_create(account=self.account, **self.cleaned_data)
            )
        return self.save_or_report(
            lambda: directory.link_update(link=self.link, **self.cleaned_data)
        )


class DestinationForm(AccountForm):
    destination = _destination_field()

    def __init__(self, *args, link: Link, **kwargs):
        self.link = link
        kwargs.setdefault(
            "initial", {"destination": link.destination.contact_id if link.destination else None}
        )
        super().__init__(*args, **kwargs)
        self.fields["destination"].queryset = contact_choices(self.account)

    def save(self) -> Link:
        return directory.link_set_destination(
            link=self.link, destination=self.cleaned_data["destination"]
        )


class ContactForm(AccountForm):
    # Forwarded mail may name the contact in its To header.
    name = forms.CharField(max_length=200, validators=[header_value_validator])
    email = forms.EmailField(
        label="Email address",
        help_text="Alias mail forwarded to this contact is sent here.",
        validators=[header_value_validator],
    )
    contact_id = _id_field("Contact id", required=False)

    def __init__(self, *args, contact: Contact | None = None, **kwargs):
        self.contact = contact
        if contact is not None:
            kwargs.setdefault(
                "initial",
                {"contact_id": contact.contact_id, "name": contact.name, "email": contact.email},
            )
        super().__init__(*args, **kwargs)
        if contact is None:
            self.fields["contact_id"].help_text = "Leave empty to have one generated."
        else:
            self.fields["contact_id"].required = True

    def clean_contact_id(self) -> str:
        if not self.cleaned_data["contact_id"]:
            return ""
        return self._unique_id(Contact, "contact_id", self.contact)

    def save(self) -> Contact | None:
        data = dict(self.cleaned_data)
        if self.contact is None:
            data["contact_id"] = data["contact_id"] or None
            return self.save_or_report(
                lambda: directory.contact_create(account=self.account, **data)
            )
        return self.save_or_report(lambda: directory.contact_update(contact=self.contact, **data))


# --- Communication Details ---------------------------------------------------------------------

DEFAULT_RANGE_DAYS = 30
# The chart draws one bar a day; a longer range would draw unreadable slivers.
MAX_RANGE_DAYS = 366


class CommunicationFilterForm(forms.Form):
    """The filters of Communication Details, turned into the search API's own parameters so
    the page runs the very query the API would."""

    start = forms.DateField(
        label="From", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    end = forms.DateField(
        label="To", required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    node = forms.ChoiceField(label="Node", required=False)
    link = forms.ChoiceField(label="Link", required=False)
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any status"), *Disposition.choices]
    )
    read = forms.ChoiceField(
        label="Read", required=False, choices=[("", "Read or unread"), *ReadDisposition.choices]
    )
    conversation = forms.UUIDField(label="Conversation", required=False, widget=forms.HiddenInput)

    def __init__(self, data, *, account: Account, today: date | None = None):
        self.today = today or timezone.now().date()
        # Explicit dates, so the inputs show the range in force.
        data = data.copy()
        if not data.get("end"):
            data["end"] = self.today.isoformat()
        if not data.get("start"):
            end = forms.DateField().to_python(data["end"]) if _is_date(data["end"]) else self.today
            data["start"] = (end - timedelta(days=DEFAULT_RANGE_DAYS - 1)).isoformat()
        super().__init__(data)
        nodes = Node.objects.for_account(account).values_list("node_id", "node_name")
        links = Link.objects.for_account(account).values_list("link_id", "link_name")
        self.fields["node"].choices = [("", "All nodes"), *nodes]
        self.fields["link"].choices = [("", "All links"), *links]

    def clean(self):
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and start > end:
            raise forms.ValidationError("The start date must be on or before the end date.")
        if start and end and (end - start).days >= MAX_RANGE_DAYS:
            raise forms.ValidationError(f"Choose a range of at most {MAX_RANGE_DAYS} days.")
        return data

    @property
    def first_day(self) -> date:
        start = self.cleaned_data.get("start") if self.is_valid() else None
        return start or self.last_day - timedelta(days=DEFAULT_RANGE_DAYS - 1)

    @property
    def last_day(self) -> date:
        end = self.cleaned_data.get("end") if self.is_valid() else None
        return end or self.today

    def presets(self) -> list[dict]:
        """Quick ranges offered above the filters, with whether each is the range in force."""
        today = self.today
        first_of_month = today.replace(day=1)
        last_month_end = first_of_month - timedelta(days=1)
        ranges = [
            ("Today", today, today),
            ("Last 7 days", today - timedelta(days=6), today),
            ("Last 30 days", today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today),
            ("This month", first_of_month, today),
            ("Last month", last_month_end.replace(day=1), last_month_end),
        ]
        current = (self.first_day, self.last_day) if self.is_valid() else None
        return [
            {"label": label, "start": start, "end": end, "active": current == (start, end)}
            for label, start, end in ranges
        ]

    def search_params(self) -> dict[str, str]:
        """The search API's parameters for these filters (start and end always explicit)."""
        data = self.cleaned_data if self.is_valid() else {}
        params = {
            "start_date": f"{self.first_day:%Y-%m-%d} 00:00:00",
            "end_date": f"{self.last_day:%Y-%m-%d} 23:59:59",
            "node_id": data.get("node", ""),
            "link_id": data.get("link", ""),
            "disposition": data.get("status", ""),
            "read_disposition": data.get("read", ""),
            "conversation_id": str(data["conversation"]) if data.get("conversation") else "",
        }
        return {key: value for key, value in params.items() if value}


def _is_date(value: str) -> bool:
    try:
        forms.DateField().to_python(value)
    except forms.ValidationError:
        return False
    return True


# --- Webhooks and suppressions --------------------------------------------------------------


class WebhookForm(AccountForm):
    url = forms.CharField(
        label="URL",
        max_length=2000,
        help_text="An http(s) address on the public internet; events are POSTed to it.",
    )
    events = forms.MultipleChoiceField(
        label="Events",
        choices=[(t, t) for t in EventType.values],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    description = forms.CharField(max_length=500, required=False)

    def __init__(self, *args, endpoint: WebhookEndpoint | None = None, **kwargs):
        self.endpoint = endpoint
        if endpoint is not None:
            kwargs.setdefault(
                "initial",
                {
                    "url": endpoint.url,
                    "events": endpoint.events,
                    "description": endpoint.description,
                },
            )
        super().__init__(*args, **kwargs)

    def clean_url(self) -> str:
        try:
            return webhook_url_check(self.cleaned_data["url"].strip())
        except WebhookUrlError as exc:
            raise forms.ValidationError(f"The URL {exc}.") from None

    def save(self) -> WebhookEndpoint | None:
        try:
            if self.endpoint is None:
                return webhook_services.webhook_create(account=self.account, **self.cleaned_data)
            return webhook_services.webhook_update(endpoint=self.endpoint, **self.cleaned_data)
        except webhook_services.WebhookError as exc:
            self.add_error(None, str(exc))
            return None


class SuppressionForm(AccountForm):
    email_address = forms.EmailField(label="Email address", max_length=254)
    reason = forms.ChoiceField(
        choices=[
            (SuppressionReason.MANUAL, SuppressionReason.MANUAL.label),
            (SuppressionReason.COMPLAINT, SuppressionReason.COMPLAINT.label),
        ],
        initial=SuppressionReason.MANUAL,
    )

    def save(self):
        suppression, _ = suppressions.suppression_add(account=self.account, **self.cleaned_data)
        return suppression
