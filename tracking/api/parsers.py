"""JSON parsing with a size cap, a depth cap, and the strings every API input must be free of.

Every JSON body the API accepts passes `BoundedJSONParser`, so these rules hold for every field
of every endpoint without a serializer knowing: an oversized body is a 413 and never read
whole; a body nested deeper than API_MAX_JSON_DEPTH is a 400 (nothing downstream recurses
into it); and a string holding a NUL (which PostgreSQL cannot store or even compare) or a lone
UTF-16 surrogate (which cannot be encoded as UTF-8) is a 400 naming its field. The path and
query are checked likewise by iovox_email.middleware.ControlCharactersMiddleware.
"""

from __future__ import annotations

import re

from django.conf import settings
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "request body is too large"
    default_code = "too_large"


def too_large(length: int) -> RequestTooLarge:
    return RequestTooLarge(
        f"request body is too large: {length} bytes, the limit is {settings.MAX_REQUEST_SIZE} bytes"
    )


def json_input_errors(data) -> list[str]:
    """Problems of a parsed JSON document, each naming where it is ("attachments[0].id ...").
    Walked without recursion, so no document can exhaust the stack here."""
    errors: list[str] = []
    stack = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > settings.API_MAX_JSON_DEPTH:
            return [
                f"request body is nested too deeply: at most {settings.API_MAX_JSON_DEPTH} levels"
            ]
        if isinstance(value, str):
            if UNSTORABLE.search(value):
                errors.append(
                    f"{where or 'request body'} cannot contain NUL characters or lone surrogates"
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if UNSTORABLE.search(key):
                    errors.append("field names cannot contain NUL characters or lone surrogates")
                    continue
                stack.append((item, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
    return sorted(errors)


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        try:
            length = int(length or 0)
        except ValueError:
            length = 0
        if length > settings.MAX_REQUEST_SIZE:
            raise too_large(length)
        try:
            data = super().parse(stream, media_type, parser_context)
        except exceptions.ParseError as exc:
            raise exceptions.ParseError(f"request body is not valid JSON: {exc.detail}") from exc
        except RecursionError:
            # json's own decoder recurses once per level and gives up near the stack's limit.
            raise exceptions.ParseError(
                f"request body is nested too deeply: at most {settings.API_MAX_JSON_DEPTH} levels"
            ) from None
        if errors := json_input_errors(data):
            raise exceptions.ValidationError(errors)
        return data
