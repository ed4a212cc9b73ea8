"""JSON parsing with a size cap, so an oversized body is a clear 413 and never read whole."""

from __future__ import annotations

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body is too large"
    default_code = "too_large"


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        try:
            length = int(length or 0)
        except ValueError:
            length = 0
        if length > settings.MAX_REQUEST_SIZE:
            raise RequestTooLarge(
                f"request body is too large: {length} bytes, the limit is "
                f"{settings.MAX_REQUEST_SIZE} bytes"
            )
        try:
            return super().parse(stream, media_type, parser_context)
        except exceptions.ParseError as exc:
            raise exceptions.ParseError(f"request body is not valid JSON: {exc.detail}") from exc
