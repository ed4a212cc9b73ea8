"""Shared fixtures: named actors (alice owns things, bob is another account) and API clients
that authenticate with the `username` and `secureKey` headers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from tests.factories import AccountFactory, ApiCredentialFactory
from tracking.models import Account, ApiCredential


@dataclass
class Actor:
    account: Account
    credential: ApiCredential
    secure_key: str
    client: APIClient

    @property
    def headers(self) -> dict[str, str]:
        return {"username": self.credential.username, "secureKey": self.secure_key}


def make_actor(name: str) -> Actor:
    account = AccountFactory(name=name)
    key = f"{name}-secure-key-0123456789abcdef0123456789"
    credential = ApiCredentialFactory(account=account, username=name, secure_key=key)
    client = APIClient()
    client.credentials(HTTP_USERNAME=name, HTTP_SECUREKEY=key)
    return Actor(account=account, credential=credential, secure_key=key, client=client)


@pytest.fixture
def alice(db) -> Actor:
    return make_actor("alice")


@pytest.fixture
def bob(db) -> Actor:
    return make_actor("bob")


@pytest.fixture(autouse=True)
def tracking_events_written_at_once(settings):
    """Tracking hits are written within their request in tests. The web default batches them
    for later (tracking/engagement/recorder.py), possibly from a timer thread whose own
    connection could not see a test's uncommitted rows."""
    settings.TRACKING_EVENT_FLUSH_INTERVAL = 0
