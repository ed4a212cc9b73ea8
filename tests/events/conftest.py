"""Webhook receivers on loopback, and the settings that let the worker post to them."""

from __future__ import annotations

import pytest

from tests.webhook_receivers import Receiver


@pytest.fixture(autouse=True)
def webhooks_to_loopback(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 1.0
    settings.WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = 0


def _receiver(behaviour: str):
    receiver = Receiver(behaviour).start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver():
    yield from _receiver("ok")


@pytest.fixture
def flaky_receiver():
    yield from _receiver("flaky")


@pytest.fixture
def hanging_receiver():
    yield from _receiver("hang")
