"""Django admin of conversations and inbound mail, and of what receivers need to trust our
mail: proxy domains, DKIM keys and domain checks (docs/deliverability.md)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from conversations.domains import NotOurDomain, domains_check
from conversations.inbound.receive import inbound_route_again
from conversations.models import Conversation, DomainCheck, InboundMessage, ProxyDomain
from conversations.services import proxy_domain_add
from tracking.admin import DKIM_KEY_ADDED_HINT, DomainNameForm, ValidatedFieldsAdmin
from tracking.headers import header_value_validator
from tracking.models import DkimKey
from tracking.services.dkim_keys import (
    InvalidKey,
    dkim_key_add,
    dkim_key_check,
    dkim_key_retire,
    dkim_key_rotate,
)

KEY_SIGNS_WHEN_SEEN = (
    "It signs once a domain check sees the record in DNS (hourly, or at once with the "
    "'Check DNS now' action or `manage.py check_domains`)."
)


def _check_domains(model_admin: admin.ModelAdmin, request, domains: set[str]) -> None:
    """Check `domains` now (those that are ours or signing domains) and say how it went."""
    try:
        checked = domains_check(domains=sorted(domains))
    except NotOurDomain as exc:
        model_admin.message_user(request, str(exc), messages.ERROR)
        return
    for row in checked:
        level = messages.SUCCESS if _all_ok(row) else messages.WARNING
        model_admin.message_user(request, f"Checked {row.domain}: {_summary(row)}", level)


def _summary(row: DomainCheck) -> str:
    checks = ("mx", "spf", "dkim", "dmarc")
    return ", ".join(
        f"{name.upper()} {getattr(row, f'get_{name}_display')()}"
        for name in checks
        if getattr(row, name)
    )


def _all_ok(row: DomainCheck) -> bool:
    statuses = [row.mx, row.spf, row.dkim, row.dmarc]
    return all(status in ("", DomainCheck.Status.OK) for status in statuses)


@admin.register(ProxyDomain)
class ProxyDomainAdmin(admin.ModelAdmin):
    """A domain is added with its DKIM key (proxy_domain_add); afterwards only its sharing
    changes (addresses already made on it keep its name)."""

    form = DomainNameForm
    list_display = ["domain", "account", "created_at"]
    list_filter = [("account", admin.EmptyFieldListFilter)]
    search_fields = ["domain", "account__name"]
    fields = ["domain", "account", "created_at"]
    actions = ["check_dns"]

    def get_readonly_fields(self, request, obj=None):
        return ["created_at"] if obj is None else ["domain", "created_at"]

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["account"])
            return
        obj.pk = proxy_domain_add(domain=obj.domain, account=obj.account)[0].pk
        messages.info(request, DKIM_KEY_ADDED_HINT)

    @admin.action(description="Check DNS now (MX, SPF, DKIM, DMARC)")
    def check_dns(self, request, queryset):
        _check_domains(self, request, set(queryset.values_list("domain", flat=True)))


class DkimKeyForm(forms.ModelForm):
    selector = forms.CharField(
        required=False, help_text="Leave empty for a dated one (iovox-YYYYMMDD)."
    )
    private_key = forms.CharField(
        widget=forms.Textarea,
        required=False,
        help_text="A PEM RSA private key; leave empty to generate a new 2048-bit key.",
    )

    class Meta:
        model = DkimKey
        fields = ["domain", "selector", "private_key"]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("domain"):
            try:
                dkim_key_check(
                    domain=cleaned["domain"],
                    selector=cleaned.get("selector") or "",
                    private_key=cleaned.get("private_key") or "",
                )
            except InvalidKey as exc:
                raise forms.ValidationError(str(exc)) from None
        return cleaned


@admin.register(DkimKey)
class DkimKeyAdmin(admin.ModelAdmin):
    """Keys are added here (or with `manage.py add_dkim_key`) and rotated here (or with
    `manage.py rotate_dkim_key`); the private key is never shown again. A new key signs once
    its record is seen in DNS (tracking/services/dkim_keys.py)."""

    form = DkimKeyForm
    list_display = ["domain", "selector", "status", "created_at", "activated_at", "retire_after"]
    list_filter = ["status"]
    search_fields = ["domain", "selector"]
    actions = ["rotate", "check_dns", "retire"]
    readonly_fields = [
        "domain",
        "selector",
        "status",
        "dns_record",
        "created_at",
        "activated_at",
        "retire_after",
    ]

    def get_fields(self, request, obj=None):
        return ["domain", "selector", "private_key"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    @admin.display(description="DNS TXT record to publish")
    def dns_record(self, obj: DkimKey) -> str:
        return obj.dns_record

    def save_model(self, request, obj, form, change):
        if change:
            return  # nothing of a key changes but by the actions
        added = dkim_key_add(
            domain=obj.domain,
            selector=form.cleaned_data.get("selector") or "",
            private_key=form.cleaned_data["private_key"],
        )
        obj.pk = added.pk
        messages.info(request, f"Publish: {added.dns_record}. {KEY_SIGNS_WHEN_SEEN}")

    @admin.action(description="Rotate: a new key for each selected key's domain")
    def rotate(self, request, queryset):
        for domain in sorted(set(queryset.values_list("domain", flat=True))):
            key = dkim_key_rotate(domain=domain)
            messages.info(request, f"Publish: {key.dns_record}")
        messages.info(request, KEY_SIGNS_WHEN_SEEN)

    @admin.action(description="Check DNS now (a published new key starts signing)")
    def check_dns(self, request, queryset):
        _check_domains(self, request, set(queryset.values_list("domain", flat=True)))

    @admin.action(description="Retire now: stop signing with the selected keys at once")
    def retire(self, request, queryset):
        count = sum(dkim_key_retire(key=key) for key in queryset)
        self.message_user(request, f"{count} key(s) retired.", messages.WARNING)


@admin.register(DomainCheck)
class DomainCheckAdmin(admin.ModelAdmin):
    """The last check of each domain (run hourly by the worker), with the records to publish."""

    list_display = ["domain", "kinds", "mx", "spf", "dkim", "dmarc", "checked_at"]
    list_filter = ["mx", "spf", "dkim", "dmarc", "kinds"]
    search_fields = ["domain"]
    fields = ["domain", "kinds", "mx", "spf", "dkim", "dmarc", "checked_at", "records"]
    readonly_fields = fields
    actions = ["check_again"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Records")
    def records(self, obj: DomainCheck):
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (f["check"].upper(), f["status"], f["name"], f["detail"], f["record"])
                for f in obj.findings
            ),
        )
        return format_html(
            "<table><tr><th>check</th><th>status</th><th>name</th><th>found</th>"
            "<th>record to publish</th></tr>{}</table>",
            rows,
        )

    @admin.action(description="Check the selected domains again now")
    def check_again(self, request, queryset):
        _check_domains(self, request, set(queryset.values_list("domain", flat=True)))


@admin.register(Conversation)
class ConversationAdmin(ValidatedFieldsAdmin):
    # Relayed mail carries these in its From and To headers.
    field_validators = {
        name: [header_value_validator]
        for name in (
            "proxy_address",
            "proxy_name",
            "party_a_address",
            "party_a_name",
            "party_b_address",
            "party_b_name",
        )
    }
    list_display = [
        "conversation_id",
        "proxy_address",
        "party_a_address",
        "party_b_address",
        "link",
        "kind",
    ]
    list_filter = ["kind", "account", "proxy_domain"]
    search_fields = ["=conversation_id", "proxy_address", "party_a_address", "party_b_address"]
    list_select_related = ["link"]
    raw_id_fields = ["link"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    list_display = [
        "received_at", "mail_from", "rcpt_to", "status", "spf", "dkim", "dmarc", "quarantined"
    ]  # fmt: skip
    list_filter = ["status", "quarantined", "spf", "dkim", "dmarc"]
    show_facets = admin.ShowFacets.ALWAYS  # how many were quarantined, refused, ...
    search_fields = ["mail_from", "error"]
    exclude = ["raw", "messages"]
    readonly_fields = [
        "received_at",
        "peer",
        "helo",
        "mail_from",
        "rcpt_to",
        "status",
        "error",
        "attempts",
        "retry_at",
        "spf",
        "dkim",
        "dmarc",
        "authentication_results",
        "quarantined",
        "authentication",
    ]
    actions = ["route_again"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Route the selected failed or deferred messages again now")
    def route_again(self, request, queryset):
        count = inbound_route_again(inbound_pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} message(s) queued for routing.", messages.SUCCESS)
