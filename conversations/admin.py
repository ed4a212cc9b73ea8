from django.contrib import admin, messages

from conversations.inbound.receive import inbound_route_again
from conversations.models import Conversation, InboundMessage, ProxyDomain
from tracking.admin import ValidatedFieldsAdmin
from tracking.headers import header_value_validator


@admin.register(ProxyDomain)
class ProxyDomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "account", "created_at"]
    list_filter = [("account", admin.EmptyFieldListFilter)]
    search_fields = ["domain", "account__name"]


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
    ]
    list_filter = ["account", "proxy_domain"]
    search_fields = ["=conversation_id", "proxy_address", "party_a_address", "party_b_address"]
    list_select_related = ["link"]
    raw_id_fields = ["link"]

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    list_display = ["received_at", "mail_from", "rcpt_to", "status", "spf", "dkim", "dmarc"]
    list_filter = ["status", "spf", "dkim", "dmarc"]
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
    ]
    actions = ["route_again"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Route the selected failed or deferred messages again now")
    def route_again(self, request, queryset):
        count = inbound_route_again(inbound_pks=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} message(s) queued for routing.", messages.SUCCESS)
