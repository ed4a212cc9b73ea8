"""Portal actors: alice's and bob's portal users, each with a logged-in Django test client."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import UserFactory


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    """Portal tests log users in; the production hasher's ~300 ms per password is not what
    they test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def portal_client(account, username: str) -> Client:
    user = UserFactory(username=username, account=account)
    client = Client()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def alice_portal(alice) -> Client:
    return portal_client(alice.account, "alice-user")


@pytest.fixture
def bob_portal(bob) -> Client:
    return portal_client(bob.account, "bob-user")
