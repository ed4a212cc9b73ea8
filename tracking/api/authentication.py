"""Authentication by the `username` and `secureKey` headers of the spec."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from tracking.services.accounts import credential_authenticate


class SecureKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        username = request.META.get("HTTP_USERNAME", "")
        secure_key = request.META.get("HTTP_SECUREKEY", "")
        if not username or not secure_key:
            raise exceptions.NotAuthenticated("username and secureKey headers are required")
        credential = credential_authenticate(username=username, secure_key=secure_key)
        if credential is None:
            raise exceptions.AuthenticationFailed("username or secureKey is not valid")
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
