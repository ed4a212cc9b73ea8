"""Serializer fields shared by the API's serializers."""

from __future__ import annotations

import copy
import re

from rest_framework import serializers
from rest_framework.validators import ProhibitSurrogateCharactersValidator

SURROGATE = re.compile("[\ud800-\udfff]")


class SurrogateCharactersValidator(ProhibitSurrogateCharactersValidator):
    """DRF's rule (lone UTF-16 surrogates, which JSON can carry, are refused) with its message,
    checked by a regular expression rather than a Python loop over every character: a
    message's HTML or a base64 attachment is megabytes long."""

    def __call__(self, value) -> None:
        if match := SURROGATE.search(str(value)):
            message = self.message.format(code_point=ord(match.group()))
            raise serializers.ValidationError(message, code=self.code)


class CharField(serializers.CharField):
    """DRF's CharField with the fast surrogate check."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validators = [
            SurrogateCharactersValidator()
            if isinstance(validator, ProhibitSurrogateCharactersValidator)
            else validator
            for validator in self.validators
        ]


class CopiedFieldsMixin:
    """A serializer whose instances get shallow copies of its declared fields rather than
    DRF's deep copies (the deep copy re-runs every field's constructor: a fifth of the CPU of
    `POST /rest/v1/email`). DRF deep-copies so that an instance may change its fields without
    touching the others'; a serializer with this mixin never changes its fields. Each copy is
    bound to its own serializer; what the copies share (validators, error messages, a list
    field's child serializer) is only read while validating.

    DRF has no public way to reach the declared fields but the deep copy: `_declared_fields`
    is read here only, and test_serializer_instances_share_no_field_state_even_across_threads
    (tests/tracking/test_send_api.py) fails if an upgrade renames or changes it."""

    def get_fields(self):
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}
