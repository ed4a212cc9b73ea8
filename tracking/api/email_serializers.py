"""Input of `POST /rest/v1/email` (the spec's send fields and attachment fields) and output
of `GET /rest/v1/email/{message_id}`."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime

from django.conf import settings
from rest_framework import exceptions, serializers, status

from tracking.api.fields import CharField, CopiedFieldsMixin
from tracking.dates import date_text
from tracking.engagement.events import (
    EVENTS_LIMIT,
    EVENTS_MAX_LIMIT,
    event_fields,
    message_event_counts,
    message_events_page,
)
from tracking.headers import header_value_validator
from tracking.models import Account, Attachment, Direction, Link, Message
from tracking.search import SearchQuery, content_fields, search_rows
from tracking.services.directory import link_for_sending
from tracking.services.messages import AttachmentDraft
from tracking.services.sending import (
    ProxyDomainRefused,
    proxy_domain_usable,
    proxy_parties_errors,
)

MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$", re.I)
WHITESPACE = re.compile(rb"\s+")


class MessageTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


class HeaderCharField(CharField):
    """A value that goes into a header line: no line break or other control character
    (tracking/headers.py has the rule), checked before trimming could hide a trailing one."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)
        self.validators.append(header_value_validator)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        header_value_validator(value)
        return value.strip()


class AddressField(serializers.EmailField):
    """An email address for the envelope and the headers: ASCII, no line breaks, an
    internationalised domain converted to its ASCII (punycode) form."""

    default_error_messages = {"invalid": "is not a valid email address"}

    def to_internal_value(self, data):
        header_value_validator(data)
        value = super().to_internal_value(data).strip()
        local, _, domain = value.rpartition("@")
        try:
            domain = domain.encode("idna").decode("ascii").lower()
        except UnicodeError:
            self.fail("invalid")
        if not local.isascii():
            raise serializers.ValidationError(
                "must have an ASCII local part", code="non_ascii_address"
            )
        return f"{local}@{domain}"


class AttachmentSerializer(serializers.Serializer):
    disposition = serializers.ChoiceField(
        choices=Attachment.Disposition.values,
        error_messages={"invalid_choice": 'must be "inline" or "attachment"'},
    )
    type = HeaderCharField(max_length=255)
    body = CharField(trim_whitespace=True, allow_blank=True)
    filename = HeaderCharField(max_length=255, required=False, allow_blank=True, default="")
    id = HeaderCharField(max_length=255, required=False, allow_blank=True, default="")

    def validate_type(self, value: str) -> str:
        if not MIME_TYPE.match(value):
            raise serializers.ValidationError('is not a MIME type like "application/pdf"')
        return value.lower()

    def validate_body(self, value: str) -> bytes:
        try:
            return base64.b64decode(WHITESPACE.sub(b"", value.encode("ascii")), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise serializers.ValidationError("is not valid base64") from None

    def validate_id(self, value: str) -> str:
        # Accept "<part1>" as well as "part1": the Content-ID is written with its brackets.
        value = value.strip("<>")
        if any(ch in value for ch in "<> \t"):
            raise serializers.ValidationError("cannot contain spaces or angle brackets")
        return value

    def validate(self, attrs):
        errors = {}
        if attrs["disposition"] == Attachment.Disposition.ATTACHMENT and not attrs["filename"]:
            errors["filename"] = 'is required when disposition is "attachment"'
        if attrs["disposition"] == Attachment.Disposition.INLINE and not attrs["id"]:
            errors["id"] = 'is required when disposition is "inline"'
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def to_draft(self, attrs) -> AttachmentDraft:
        return AttachmentDraft(
            disposition=attrs["disposition"],
            content_type=attrs["type"],
            filename=attrs["filename"],
            content_id=attrs["id"],
            content=attrs["body"],
        )


class SendEmailSerializer(CopiedFieldsMixin, serializers.Serializer):
    """The send fields of the spec. Every problem is reported at once. `validated_data` holds
    `link` (a Link of the caller's account) and `attachments` (AttachmentDraft objects).

    A `proxy_domain` is accepted when the account may use it (shared, or private to it): the
    proxy step of tracking/services/sending.py has the rule."""

    link_id = CharField(max_length=100)
    sender_address = AddressField(max_length=254)
    sender_name = HeaderCharField(max_length=200)
    recipient_address = AddressField(max_length=254)
    recipient_name = HeaderCharField(max_length=200)
    subject = HeaderCharField(max_length=998)
    text_content = CharField(trim_whitespace=False)
    html_content = CharField(trim_whitespace=False)
    proxy_domain = HeaderCharField(max_length=253, required=False, allow_blank=True, default="")
    proxy_name = HeaderCharField(max_length=200, required=False, allow_blank=True, default="")
    attachments = AttachmentSerializer(many=True, required=False, default=list)

    @property
    def account(self):
        return self.context["request"].user.account

    def validate_link_id(self, value: str) -> Link:
        link = link_for_sending(account=self.account, link_id=value)
        if link is None:
            raise serializers.ValidationError("does not exist", code="does_not_exist")
        return link

    def validate_proxy_domain(self, value: str) -> str:
        if not value.strip():
            return ""
        try:
            return proxy_domain_usable(account=self.account, domain=value)
        except ProxyDomainRefused as e:
            raise serializers.ValidationError(str(e), code="not_configured") from None

    def validate_attachments(self, value: list[dict]) -> list[AttachmentDraft]:
        return [AttachmentSerializer().to_draft(attrs) for attrs in value]

    def validate(self, attrs):
        attrs["link"] = attrs.pop("link_id")
        size = (
            len(attrs["text_content"].encode())
            + len(attrs["html_content"].encode())
            + sum(len(draft.content) for draft in attrs["attachments"])
        )
        if size > settings.MAX_MESSAGE_SIZE:
            raise MessageTooLarge(
                f"message is too large: {size} bytes of content and attachments, the limit "
                f"is {settings.MAX_MESSAGE_SIZE} bytes"
            )
        if attrs.get("proxy_domain"):
            errors = proxy_parties_errors(
                sender_address=attrs["sender_address"], recipient_address=attrs["recipient_address"]
            )
            if errors:
                raise serializers.ValidationError(errors)
        return attrs


def message_search_fields(message: Message, *, account: Account) -> dict:
    """The message as the search endpoint shows it (every available field, dates in UTC,
    absent values left out): the same query builder, so the two cannot drift apart."""
    query = SearchQuery(
        start=datetime.min.replace(tzinfo=UTC),
        end=datetime.max.replace(tzinfo=UTC, microsecond=0),
        filters={"message_id": message.message_id},
        limit=1,
    )
    return next(iter(search_rows(account=account, query=query)), {})


class EventPageSerializer(serializers.Serializer):
    """`page` and `limit` of `GET /rest/v1/email/{message_id}`: which of the message's kept
    events it lists, with the names the spec's search uses for its pages."""

    page = serializers.IntegerField(min_value=1, max_value=1_000_000_000, default=1)
    limit = serializers.IntegerField(min_value=1, max_value=EVENTS_MAX_LIMIT, default=EVENTS_LIMIT)


def message_detail(message: Message, *, account: Account, page: int, limit: int) -> dict:
    """`GET /rest/v1/email/{message_id}`: the search fields, the subject, why the message
    ended as it did (when known), its delivery attempts, the counts of its opens, clicks and
    bounces, and one page of the events it kept (`events_*` say which page of how many)."""
    detail = message_search_fields(message, account=account)
    detail["subject"] = message.subject
    # Past MESSAGE_CONTENT_RETENTION_DAYS the bodies and attachments are gone; the rest stays.
    detail |= content_fields(message.content_purged_at)
    if message.status_detail:
        detail["status_detail"] = message.status_detail
    if message.direction != Direction.API:
        detail["authentication"] = message.sender_authentication()
    detail["attempts"] = [
        {
            name: value
            for name, value in {
                "attempted_at": date_text(attempt.attempted_at),
                "mx_host": attempt.mx_host,
                "smtp_code": attempt.smtp_code,
                "smtp_text": attempt.smtp_text,
                "enhanced_code": attempt.enhanced_code,
                "bounce_type": attempt.bounce_type,
                "outcome": attempt.outcome,
            }.items()
            if value not in (None, "")
        }
        for attempt in message.attempts.all()
    ]
    detail["event_counts"] = message_event_counts(message)
    # Each open and click says whether it looks like a person or a machine, and why.
    events = message_events_page(message, page=page, limit=limit)
    detail["events"] = [event_fields(event) for event in events.events]
    detail["events_current_page"] = events.current_page
    detail["events_total_pages"] = events.total_pages
    detail["events_total_results"] = events.total_results
    return detail
