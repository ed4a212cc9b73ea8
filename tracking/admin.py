"""Django admin for support staff: accounts, credentials, directory and a read-only view of
messages with their attempts and events."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction

from tracking.headers import header_value_validator
from tracking.models import (
    Account,
    AliasDomain,
    ApiCredential,
    Attachment,
    Contact,
    DeliveryAttempt,
    Link,
    Message,
    Node,
    Suppression,
    TrackingEvent,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)
from tracking.models.accounts import username_validator
from tracking.models.directory import directory_id_validator
from tracking.services import directory
from tracking.services.accounts import credential_create, credential_rotate
from tracking.services.auth_throttle import auth_failures_reset
from tracking.services.directory import alias_domain_add
from tracking.services.dkim_keys import InvalidKey, domain_normalise
from tracking.services.suppressions import suppression_delete
from tracking.webhooks.services import webhook_delete

DKIM_KEY_ADDED_HINT = (
    "A DKIM key was made for it: publish the records that Domain checks and DKIM keys show."
)


class ServiceDeleteAdmin(admin.ModelAdmin):
    """An admin that deletes through the resource's delete service (`delete_service`, called
    with the row as its one keyword argument), as the API and the portal do, one row at a
    time for the bulk action too."""

    delete_service = None
    delete_keyword = ""

    def delete_model(self, request, obj) -> None:
        type(self).delete_service(**{self.delete_keyword: obj})

    @transaction.atomic  # all or none, as QuerySet.delete()
    def delete_queryset(self, request, queryset) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


class ValidatedFieldsAdmin(admin.ModelAdmin):
    """An admin whose form fields get the shared input rules the API and the portal apply
    (the model fields carry no validators of their own)."""

    field_validators: dict[str, list] = {}

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if field is not None and db_field.name in self.field_validators:
            field.validators = [*field.validators, *self.field_validators[db_field.name]]
        return field


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at", "delivery_transport"]
    list_filter = ["delivery_transport"]
    search_fields = ["name"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = ["username", "account", "email", "is_staff", "is_active"]
    list_filter = ["is_staff", "is_active", "account"]
    fieldsets = [*BaseUserAdmin.fieldsets, ("Account", {"fields": ["account"]})]
    add_fieldsets = [*BaseUserAdmin.add_fieldsets, ("Account", {"fields": ["account"]})]


class ApiCredentialForm(forms.ModelForm):
    class Meta:
        model = ApiCredential
        fields = ["account", "username", "is_active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["username"].validators.append(username_validator)


@admin.register(ApiCredential)
class ApiCredentialAdmin(admin.ModelAdmin):
    form = ApiCredentialForm
    list_display = ["username", "account", "key_hint", "is_active", "created_at", "last_used"]
    list_filter = ["is_active", "account"]
    search_fields = ["username", "account__name"]
    readonly_fields = ["key_hint", "created_at", "last_used"]
    actions = ["rotate_keys", "unlock"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["account", "username", "is_active"])
            return
        issued = credential_create(account=obj.account, username=obj.username)
        obj.pk = issued.credential.pk
        messages.warning(
            request,
            f"The secure key of {obj.username} is {issued.secure_key}. Copy it now: "
            "it is stored hashed and will not be shown again.",
        )

    @admin.action(description="Rotate the secure key (shows the new key once)")
    def rotate_keys(self, request, queryset):
        for credential in queryset:
            key = credential_rotate(credential=credential)
            messages.warning(request, f"New secure key of {credential.username}: {key}")

    @admin.action(description="Unlock after repeated wrong secure keys")
    def unlock(self, request, queryset):
        for credential in queryset:
            auth_failures_reset(username=credential.username)
        messages.info(request, "The selected usernames may authenticate again at once.")


class DomainNameForm(forms.ModelForm):
    """The domain of an alias or proxy domain: a host name, lower-cased."""

    def clean_domain(self):
        try:
            return domain_normalise(self.cleaned_data["domain"])
        except InvalidKey as exc:
            raise forms.ValidationError(str(exc)) from None


@admin.register(AliasDomain)
class AliasDomainAdmin(admin.ModelAdmin):
    """A domain is added with its DKIM key (alias_domain_add); afterwards only its sharing
    changes (aliases already made on it keep its name). Its DNS is checked under Domain
    checks, its key under DKIM keys."""

    form = DomainNameForm
    list_display = ["domain", "account"]
    list_filter = [("account", admin.EmptyFieldListFilter)]
    search_fields = ["domain", "account__name"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["domain"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["account"])
            return
        obj.pk = alias_domain_add(domain=obj.domain, account=obj.account).pk
        messages.info(request, DKIM_KEY_ADDED_HINT)


@admin.register(Node)
class NodeAdmin(ServiceDeleteAdmin, ValidatedFieldsAdmin):
    delete_service, delete_keyword = staticmethod(directory.node_delete), "node"
    field_validators = {"node_id": [directory_id_validator]}
    list_display = ["node_id", "node_name", "node_type", "account"]
    list_filter = ["account", "node_type"]
    search_fields = ["node_id", "node_name"]


class LinkAdminForm(forms.ModelForm):
    def clean(self):
        data = super().clean()
        if data.get("account"):
            try:
                directory.link_parts_check(
                    data["account"], data.get("node"), data.get("destination")
                )
            except ValueError as e:
                raise forms.ValidationError(str(e)) from None
        return data


@admin.register(Link)
class LinkAdmin(ServiceDeleteAdmin, ValidatedFieldsAdmin):
    form = LinkAdminForm
    delete_service, delete_keyword = staticmethod(directory.link_delete), "link"
    field_validators = {"link_id": [directory_id_validator]}
    list_display = ["link_id", "link_name", "link_type", "node", "email_address", "destination"]
    list_filter = ["account", "link_type"]
    search_fields = ["link_id", "link_name", "email_address", "node__node_name"]
    list_select_related = ["node", "destination"]
    raw_id_fields = ["node", "destination"]


@admin.register(Contact)
class ContactAdmin(ServiceDeleteAdmin, ValidatedFieldsAdmin):
    delete_service, delete_keyword = staticmethod(directory.contact_delete), "contact"
    field_validators = {
        "contact_id": [directory_id_validator],
        "name": [header_value_validator],
        "email": [header_value_validator],
    }
    list_display = ["contact_id", "name", "email", "account"]
    list_filter = ["account"]
    search_fields = ["contact_id", "name", "email"]


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class DeliveryAttemptInline(ReadOnlyInline):
    model = DeliveryAttempt
    fields = [
        "attempted_at",
        "mx_host",
        "smtp_code",
        "enhanced_code",
        "bounce_type",
        "smtp_text",
        "outcome",
    ]


class TrackingEventInline(ReadOnlyInline):
    model = TrackingEvent
    fields = [
        "occurred_at",
        "kind",
        "source",
        "ip",
        "user_agent",
        "url",
        "automated",
        "automated_reason",
    ]


class AttachmentInline(ReadOnlyInline):
    model = Attachment
    fields = ["disposition", "content_type", "filename", "content_id"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "message_id",
        "receive_date",
        "link",
        "sender_address",
        "recipient_address",
        "disposition",
        "read_disposition",
    ]
    list_filter = ["disposition", "read_disposition", "direction", "account"]
    search_fields = [
        "=message_id",
        "=esp_message_id",
        "sender_address",
        "recipient_address",
        "subject",
    ]
    date_hierarchy = "receive_date"
    list_select_related = ["link"]
    inlines = [AttachmentInline, DeliveryAttemptInline, TrackingEventInline]
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Support staff look; customers change these through the API and the portal."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    delete_service, delete_keyword = staticmethod(webhook_delete), "endpoint"
    # Never the secret.
    fields = ["account", "webhook_id", "url", "events", "description", "enabled"]
    fields += ["created_at", "failing_since", "disabled_reason"]
    list_display = ["url", "account", "enabled", "failing_since", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "=webhook_id"]
    list_select_related = ["account"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["event", "endpoint", "status", "attempt_count", "last_status_code"]
    list_filter = ["status"]
    list_select_related = ["event", "endpoint"]
    fields = ["endpoint", "event", "status", "attempt_count", "next_attempt_at"]
    fields += ["last_attempt_at", "last_status_code", "last_error", "last_response"]
    show_full_result_count = False


@admin.register(Suppression)
class SuppressionAdmin(ServiceDeleteAdmin, ReadOnlyAdmin):
    delete_service, delete_keyword = staticmethod(suppression_delete), "suppression"
    list_display = [
        "email_address",
        "account",
        "reason",
        "smtp_code",
        "enhanced_code",
        "created_at",
    ]
    list_filter = ["reason"]
    search_fields = ["email_address"]
    list_select_related = ["account"]
    raw_id_fields = ["message"]
