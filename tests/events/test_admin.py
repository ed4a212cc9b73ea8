"""Support staff see webhooks, their deliveries and suppressions in admin, never a secret."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import UserFactory
from tracking.services.suppressions import suppression_add
from tracking.webhooks.services import webhook_create, webhook_test

pytestmark = pytest.mark.django_db


def test_admin_lists_and_shows_without_the_secret(alice, receiver, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    endpoint = webhook_create(account=alice.account, url=receiver.url)
    delivery = webhook_test(endpoint=endpoint)
    suppression, _ = suppression_add(account=alice.account, email_address="x@example.net")
    staff = Client()
    staff.force_login(UserFactory(account=None, is_staff=True, is_superuser=True))
    for path in [
        "/admin/tracking/webhookendpoint/",
        f"/admin/tracking/webhookendpoint/{endpoint.pk}/change/",
        "/admin/tracking/webhookdelivery/",
        f"/admin/tracking/webhookdelivery/{delivery.pk}/change/",
        "/admin/tracking/suppression/",
        f"/admin/tracking/suppression/{suppression.pk}/change/",
    ]:
        response = staff.get(path)
        assert response.status_code == 200, path
        assert endpoint.secret not in response.content.decode()
