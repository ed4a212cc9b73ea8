"""The Webhooks and Suppressions pages in a real browser (Debian's Chromium via Playwright):
add a webhook and copy its secret, send a test, see the delivery and its payload, retry it;
suppress an address, find it, remove it."""

from __future__ import annotations

import pytest

from tests.factories import UserFactory
from tests.portal.test_browser import CHROMIUM_ARGS, browser, log_in, page, shot  # noqa: F401
from tests.worker import webhooks_send_due
from tracking.models import Suppression, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.browser


@pytest.fixture
def alice_user(alice, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_TIMEOUT = 2.0
    settings.WEBHOOK_RETRY_SCHEDULE = [3600]
    return UserFactory(username="alice-user", account=alice.account)


def test_add_a_webhook_send_a_test_and_retry_it(page, alice_user, flaky_receiver):  # noqa: F811
    log_in(page, "/webhooks/")
    page.wait_for_url("**/webhooks/")
    page.get_by_role("link", name="New webhook").first.click()
    page.fill("input[name=url]", flaky_receiver.url)
    page.get_by_label("email.sent").check()
    page.fill("input[name=description]", "Our CRM")
    page.get_by_role("button", name="Save").click()
    secret = page.locator("#webhook-secret").inner_text()
    endpoint = WebhookEndpoint.objects.get()
    assert secret == endpoint.secret and endpoint.events == ["email.sent"]
    shot(page, "webhook-secret")

    page.get_by_role("link", name="Done").click()
    page.get_by_role("button", name="Send test").click()
    page.locator(".flash", has_text="webhook.test").wait_for()
    webhooks_send_due()  # the worker's part: the receiver answers 500 the first time
    page.reload()
    row = page.locator("tr[id^=delivery-]").first
    assert "HTTP 500" in row.inner_text() and "Pending" in row.inner_text()
    page.get_by_text("Payload").first.click()
    assert '"type": "webhook.test"' in page.locator("pre.payload").first.inner_text()
    shot(page, "webhook-deliveries")

    row.get_by_role("button", name="Retry now").click()
    page.locator(".flash", has_text="tried again now").wait_for()
    webhooks_send_due()
    page.reload()
    assert "Delivered" in page.locator("tr[id^=delivery-]").first.inner_text()
    assert WebhookDelivery.objects.get().status == "delivered"
    flaky_receiver.verified(secret)

    page.get_by_role("button", name="Disable").click()
    page.locator(".flash", has_text="Webhook disabled").wait_for()
    endpoint.refresh_from_db()
    assert endpoint.enabled is False


def test_suppress_search_and_remove_an_address(page, alice_user):  # noqa: F811
    log_in(page, "/suppressions/")
    page.wait_for_url("**/suppressions/")
    page.fill("input[name=email_address]", "Ann@Example.net")
    page.get_by_role("button", name="Suppress").click()
    page.locator(".flash", has_text="ann@example.net is suppressed").wait_for()
    page.fill("input[name=q]", "ann")
    page.get_by_role("button", name="Search").click()
    page.locator("td", has_text="ann@example.net").wait_for()
    shot(page, "suppressions")
    page.get_by_role("button", name="Remove").click()
    page.locator(".flash", has_text="removed").wait_for()
    assert not Suppression.objects.exists()
