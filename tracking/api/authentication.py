"""Authentication by the `username` and `secureKey` headers of the spec, with repeated
failures throttled per username and per client IP (tracking/services/auth_throttle.py)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, status

from iovox_email.observability import log_context_add
from tracking.engagement.views import client_ip
from tracking.models.accounts import username_validator
from tracking.services.accounts import credential_authenticate
from tracking.services.auth_throttle import auth_failure_record, auth_lockout_remaining


class TooManyFailures(exceptions.APIException):
    """429; DRF's exception handler turns `wait` into the Retry-After header."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "throttled"

    def __init__(self, wait: int):
        self.wait = wait
        super().__init__(f"too many failed authentications, retry in {wait} s")


class SecureKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        username = request.META.get("HTTP_USERNAME", "")
        secure_key = request.META.get("HTTP_SECUREKEY", "")
        if not username or not secure_key:
            raise exceptions.NotAuthenticated("username and secureKey headers are required")
        ip = client_ip(request)
        wait = auth_lockout_remaining(username=username, ip=ip)
        if wait:
            raise TooManyFailures(wait)
        # A username no credential can have (see username_validator) is never looked up.
        credential = None
        if username_validator.regex.match(username) and len(username) <= 150:
            credential = credential_authenticate(username=username, secure_key=secure_key)
        if credential is None:
            if wait := auth_failure_record(username=username, ip=ip):
                raise TooManyFailures(wait)
            raise exceptions.AuthenticationFailed("username or secureKey is not valid")
        log_context_add(account=credential.account_id)
        return credential, credential

    def authenticate_header(self, request) -> str:
        # Any value makes DRF answer 401 rather than 403 for missing or wrong credentials.
        return 'secureKey realm="api"'


class SecureKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tracking.api.authentication.SecureKeyAuthentication"
    name = ["username", "secureKey"]

    def get_security_definition(self, auto_schema):
        return [
            {"type": "apiKey", "in": "header", "name": "username"},
            {"type": "apiKey", "in": "header", "name": "secureKey"},
        ]
