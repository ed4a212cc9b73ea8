"""The one error shape of the API: `{"errors": ["field_name problem", ...]}`.

Every exception a view raises leaves through `errors_exception_handler`, so a client sees the
same shape for a missing field, malformed JSON, an unknown id or a body that is too large.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tracking.api.parsers import too_large
from tracking.services.directory import ContactInUse

# DRF's default messages, said the spec's way ("text_content cannot be empty").
PHRASES = {
    "required": "is required",
    "blank": "cannot be empty",
    "null": "cannot be empty",
    "does_not_exist": "does not exist",
    "not_a_list": "must be a list",
    "empty": "cannot be empty",
    "unique": "already exists",
    "invalid_choice": None,  # keeps DRF's text, which names the choice
}


def error_list(detail, prefix: str = "") -> list[str]:
    """Flatten a DRF error detail (dicts of lists of ErrorDetail, nested) into sentences."""
    if isinstance(detail, dict):
        errors: list[str] = []
        for field, value in detail.items():
            if field in ("non_field_errors", "detail"):
                errors += error_list(value, prefix)
            elif isinstance(field, int):  # a ListSerializer's errors, by item index
                errors += error_list(value, f"{prefix}[{field}]")
            else:
                errors += error_list(value, f"{prefix}.{field}" if prefix else str(field))
        return errors
    if isinstance(detail, list):
        errors = []
        for index, value in enumerate(detail):
            if isinstance(value, dict | list):
                errors += error_list(value, f"{prefix}[{index}]")
            else:
                errors += error_list(value, prefix)
        return errors
    return [_sentence(detail, prefix)]


def _sentence(detail, field: str) -> str:
    message = str(detail).strip()
    phrase = PHRASES.get(getattr(detail, "code", None))
    if phrase:
        message = phrase
    if not field or message.startswith(f"{field} "):
        return message
    if not phrase and message[:1].islower():
        # Our own messages are written to follow the field name: "is not valid base64".
        return f"{field} {message}"
    message = message.rstrip(".")
    if message[:1].isupper() and not message[1:2].isupper():
        message = message[0].lower() + message[1:]
    return f"{field} {message}" if phrase else f"{field}: {message}"


def errors_response(errors: list[str], status_code: int) -> Response:
    return Response({"errors": errors}, status=status_code)


def errors_exception_handler(exc, context):
    if isinstance(exc, ContactInUse):
        return errors_response(
            ["cannot be deleted while links refer to it"], status.HTTP_409_CONFLICT
        )
    if isinstance(exc, ProtectedError | RestrictedError):
        names = (
            sorted({obj._meta.verbose_name_plural for obj in exc.protected_objects})
            if hasattr(exc, "protected_objects")
            else []
        )
        what = " and ".join(str(n) for n in names) or "other records"
        return errors_response(
            [f"cannot be deleted while {what} refer to it"], status.HTTP_409_CONFLICT
        )
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to read a body over DATA_UPLOAD_MAX_MEMORY_SIZE (its HTML 400).
        length = int(context["request"].META.get("CONTENT_LENGTH") or 0)
        exc = too_large(length)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) if str(exc) else "not found")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None  # a real server error: let Django log it and answer 500
    response.data = {"errors": error_list(exc.detail)}
    return response
