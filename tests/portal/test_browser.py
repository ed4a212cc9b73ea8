"""The portal in a real browser: Debian's Chromium driven by Playwright against live_server.

Every page is shown with the site's Content-Security-Policy enforced, and a test fails on any
violation it reports (an inline script or style, an eval), so the pages are shown to work
under it. Each main page is saved as a screenshot in test-artifacts/. Without
/usr/bin/chromium these tests skip, unless CHROMIUM_REQUIRED=1 (CI), where a missing browser
is a failure."""

from __future__ import annotations

import os
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from tests.factories import ContactFactory, LinkFactory, MessageFactory, NodeFactory, UserFactory
from tracking.models import DeliveryAttempt, Disposition, Link, TrackingEvent

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
TIMEOUT_MS = 5000


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CHROMIUM_REQUIRED") == "1":
            pytest.fail(f"{CHROMIUM} is missing and CHROMIUM_REQUIRED=1")
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop running in this thread; the ORM calls of the
    # test body are still plain synchronous calls.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    # Chromium reports each violation of the Content-Security-Policy on the console.
    violations: list[str] = []
    tab.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text and violations.append(message.text)
        ),
    )
    tab.violations = violations
    yield tab
    context.close()
    assert errors == [], errors
    assert violations == getattr(tab, "expected_violations", []), violations


@pytest.fixture
def remote_images():
    """A server on loopback standing in for the sender's image host (and our own pixel): it
    records every request it gets."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.hits = hits
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def dealer(alice):
    UserFactory(username="alice-user", account=alice.account)  # password "password"
    node = NodeFactory(account=alice.account, node_id="abc123", node_name="Bobs automotive")
    link = LinkFactory(node=node, link_id="xyz789", link_name="Honda Civic")
    LinkFactory(
        node=node, link_id="yaris", link_name="Toyota Yaris", email_address="b_y@iovox.email"
    )
    ContactFactory(
        account=alice.account, contact_id="sales", name="Sales desk", email="sales@x.example"
    )
    return link


def log_in(page, next_path: str = "") -> None:
    page.goto(f"/login/?next={next_path}" if next_path else "/login/")
    page.fill("input[name=username]", "alice-user")
    page.fill("input[name=password]", "password")
    page.click("button[type=submit]")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"portal-{name}.png"), full_page=True)


def test_log_in_generate_an_address_and_assign_a_contact_inline(page, dealer):
    page.goto("/login/")
    shot(page, "login")
    log_in(page, "/nodes/")
    page.wait_for_url("**/nodes/")

    row = page.locator("#link-xyz789")
    row.get_by_role("button", name="Generate Email Address").click()
    row.locator(".saved", has_text="Email address generated").wait_for()
    assert row.locator(".address").inner_text() == "bobs-automotive_honda-civic@iovox.email"

    page.locator("#link-xyz789").get_by_text("No Email Destination").click()
    picker = page.locator("#link-xyz789 form.picker")
    picker.locator("select").select_option("sales")
    picker.get_by_role("button", name="Save").click()
    page.locator("#link-xyz789 .saved", has_text="Destination saved").wait_for()
    assert "Sales desk" in page.locator("#link-xyz789 .destination-cell").inner_text()
    shot(page, "nodes")

    dealer.refresh_from_db()
    assert dealer.email_address == "bobs-automotive_honda-civic@iovox.email"
    assert dealer.destination.contact_id == "sales"
    assert page.url.endswith("/nodes/")  # all of it inline, no page load


def test_an_inline_edit_on_a_link_deleted_meanwhile_says_so(page, dealer):
    log_in(page, "/nodes/")
    page.wait_for_url("**/nodes/")
    dealer.delete()  # by someone else, after this page was drawn

    page.locator("#link-xyz789").get_by_role("button", name="Generate Email Address").click()

    alert = page.locator(".flash-error")
    alert.wait_for()
    assert "no longer exists" in alert.inner_text()


def test_filter_communication_details_and_open_a_message(page, remote_images, alice, dealer):
    now = timezone.now()
    statuses = [Disposition.SENT] * 5 + [Disposition.RECEIVED_BOUNCED, Disposition.QUEUED]
    for n, status in enumerate(statuses):
        MessageFactory(
            link=dealer,
            receive_date=now - timedelta(days=n, hours=1),
            disposition=status,
            subject=f"Quote #{1000 + n}",
        )
    opened = MessageFactory(
        link=Link.objects.get(link_id="yaris"),
        receive_date=now - timedelta(hours=2),
        delivery_date=now - timedelta(hours=2) + timedelta(seconds=20),
        disposition=Disposition.SENT,
        subject="Your test drive",
        # Viewing the message must not fetch its (tracking) images.
        html_content=f'<p>Hello</p><img src="{remote_images.url}/pixel.gif">',
    )
    DeliveryAttempt.objects.create(
        message=opened,
        attempted_at=opened.delivery_date,
        mx_host="mx.example.net",
        smtp_code=250,
        smtp_text="2.0.0 Ok",
        outcome="sent",
    )
    TrackingEvent.objects.create(
        message=opened,
        kind="open",
        occurred_at=opened.delivery_date + timedelta(seconds=3),
        automated=True,
        automated_reason="Image proxy",
    )

    log_in(page)
    page.wait_for_url("**/communications/")
    assert page.locator('[data-kpi="emails"] .kpi-value').inner_text() == "8"
    assert page.locator("svg.chart g.bar").count() == 30
    shot(page, "communications")

    page.select_option("select[name=status]", "sent")
    page.select_option("select[name=link]", "yaris")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url("**status=sent**")
    assert page.locator('[data-kpi="emails"] .kpi-value').inner_text() == "1"

    page.locator('[data-kpi="emails"]').click()
    page.wait_for_url("**view=emails**")
    rows = page.locator("table.emails tbody tr")
    assert rows.count() == 1
    shot(page, "emails")

    rows.first.get_by_role("link", name="Your test drive").click()
    page.wait_for_url(f"**/messages/{opened.message_id}")
    timeline = page.locator(".timeline").inner_text()
    assert "250 2.0.0 Ok" in timeline and "Automated" in timeline
    preview = page.frame_locator("iframe.html-preview")
    assert preview.locator("p").inner_text() == "Hello"
    page.wait_for_load_state("load")  # the frame and whatever it was allowed to fetch
    assert remote_images.hits == []
    # The one violation is the preview's own policy refusing the message's remote image.
    [blocked] = page.violations
    assert "pixel.gif" in blocked and '"img-src data:"' in blocked
    page.expected_violations = [blocked]
    shot(page, "message")


def test_contacts_page_in_the_browser(page, dealer):
    log_in(page, "/contacts/")
    page.wait_for_url("**/contacts/")
    assert "Sales desk" in page.locator("table").inner_text()
    shot(page, "contacts")


def test_an_injected_inline_script_does_not_run(page, dealer):
    """What if some markup escaped escaping? The page as served, with an inline script and an
    event-handler attribute slipped in: the policy keeps both from running."""
    injected = (
        "<script>window.injected = 'inline script ran'</script>"
        '<img src="data:," onerror="window.injected = \'handler ran\'">'
    )

    def inject(route):
        response = route.fetch()
        body = response.text().replace(
            '<main class="content">', '<main class="content">' + injected
        )
        route.fulfill(response=response, body=body)

    log_in(page, "/nodes/")
    page.wait_for_url("**/nodes/")
    page.route("**/nodes/", inject)
    response = page.reload()
    page.wait_for_load_state("load")

    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.evaluate("window.injected") is None
    assert page.locator("#link-xyz789").is_visible()  # the page itself still works
    assert len(page.violations) == 2
    page.expected_violations = page.violations[:]


def test_the_admin_works_under_the_policy(page, alice):
    UserFactory(username="support", account=None, is_staff=True, is_superuser=True)
    message = MessageFactory(link=LinkFactory(node__account=alice.account), subject="Quote #1")

    page.goto("/admin/")
    page.fill("input[name=username]", "support")
    page.fill("input[name=password]", "password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    page.get_by_role("link", name="Messages", exact=True).click()
    page.wait_for_url("**/admin/tracking/message/")
    assert str(message.message_id) in page.locator("#result_list").inner_text()
    page.locator("#result_list tbody a").first.click()
    page.wait_for_url("**/change/")
    assert "Quote #1" in page.locator("#content").inner_text()
    shot(page, "admin-message")


def test_the_api_docs_work_under_the_policy(page):
    page.goto("/rest/v1/docs")
    operation = page.locator("#operations-nodes-nodes_list")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    # The request went out (connect-src 'self') and its answer is shown: no credentials.
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "401"
    shot(page, "api-docs")
