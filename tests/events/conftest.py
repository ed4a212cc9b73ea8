"""The settings that let the worker post to the webhook receivers on loopback."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def webhooks_to_loopback(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 1.0
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0
