"""`/rest/v1/webhooks`: create, read, change, delete, rotate, test, deliveries; tenancy and
every bad input a 400 that names it."""

from __future__ import annotations

import pytest

from tests.worker import webhooks_send_due
from tracking.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def create(actor, url, **body):
    return actor.client.post("/rest/v1/webhooks", {"url": url, **body}, format="json")


def test_a_webhook_is_created_with_its_secret_shown_once(alice, receiver):
    response = create(alice, receiver.url, events=["email.sent"], description="CRM")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == {
        "webhook_id",
        "url",
        "events",
        "description",
        "secret",
        "enabled",
        "created_date",
    }
    assert body["url"] == receiver.url
    assert body["events"] == ["email.sent"]
    assert body["enabled"] is True
    assert body["secret"].startswith("whsec_") and len(body["secret"]) >= 6 + 32
    shown = alice.client.get(f"/rest/v1/webhooks/{body['webhook_id']}").json()
    assert "secret" not in shown
    assert [w["webhook_id"] for w in alice.client.get("/rest/v1/webhooks").json()] == [
        body["webhook_id"]
    ]


def test_events_left_out_means_all(alice, receiver):
    body = create(alice, receiver.url).json()
    assert body["events"] == []
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.subscribes_to("email.opened")


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/hook", "url must be an http or https URL"),
        ("not a url", "url cannot contain spaces"),
        ("http:///nohost", "url must name a host"),
    ],
)
def test_a_bad_url_is_a_400_naming_it(alice, url, words):
    response = create(alice, url)
    assert response.status_code == 400
    assert any(e.startswith(words) for e in response.json()["errors"]), response.json()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:9/hook", "a loopback address"),
        ("http://localhost:9/hook", "a loopback address"),
        ("http://10.1.2.3/hook", "a private address"),
        ("http://192.168.0.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "a link-local address"),
        ("http://[::1]:9/hook", "a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "a loopback address"),
    ],
)
def test_a_private_address_is_a_400_naming_it(alice, settings, url, words):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = create(alice, url)
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error.startswith("url resolves to ") and words in error


def test_our_own_networks_are_refused(alice, settings):
    import ipaddress

    settings.WEBHOOK_ALLOW_PRIVATE = False
    settings.WEBHOOK_DENIED_NETWORKS = [ipaddress.ip_network("93.184.215.0/24")]
    response = create(alice, "http://93.184.215.14/hook")
    assert response.status_code == 400
    assert "one of our own addresses" in response.json()["errors"][0]


def test_an_unknown_event_type_is_a_400_naming_it(alice, receiver):
    response = create(alice, receiver.url, events=["email.sent", "email.teleported"])
    assert response.status_code == 400
    assert response.json() == {"errors": ["events has unknown event types: email.teleported"]}


def test_patch_changes_and_disables(alice, receiver, flaky_receiver):
    webhook_id = create(alice, receiver.url).json()["webhook_id"]
    response = alice.client.patch(
        f"/rest/v1/webhooks/{webhook_id}",
        {"url": flaky_receiver.url, "events": ["email.opened"], "enabled": False},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["url"] == flaky_receiver.url
    assert response.json()["events"] == ["email.opened"]
    assert response.json()["enabled"] is False
    bad = alice.client.patch(
        f"/rest/v1/webhooks/{webhook_id}", {"url": "gopher://x"}, format="json"
    )
    assert bad.status_code == 400


def test_delete(alice, receiver):
    webhook_id = create(alice, receiver.url).json()["webhook_id"]
    assert alice.client.delete(f"/rest/v1/webhooks/{webhook_id}").status_code == 204
    assert alice.client.get(f"/rest/v1/webhooks/{webhook_id}").status_code == 404


def test_another_accounts_webhook_is_a_404(alice, bob, receiver):
    webhook_id = create(alice, receiver.url).json()["webhook_id"]
    for method, path in [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("post", "/rotate_secret"),
        ("post", "/test"),
        ("get", "/deliveries"),
    ]:
        response = getattr(bob.client, method)(
            f"/rest/v1/webhooks/{webhook_id}{path}", {}, format="json"
        )
        assert response.status_code == 404, (method, path)
        assert response.json() == {"errors": ["webhook_id does not exist"]}
    assert bob.client.get("/rest/v1/webhooks").json() == []
    assert alice.client.get("/rest/v1/webhooks/not-a-uuid").status_code == 404


def test_no_credentials_is_a_401(client):
    assert client.get("/rest/v1/webhooks").status_code == 401


def test_a_test_event_is_delivered_signed_and_listed(alice, receiver):
    created = create(alice, receiver.url, events=["email.sent"]).json()
    response = alice.client.post(f"/rest/v1/webhooks/{created['webhook_id']}/test")
    assert response.status_code == 202
    assert response.json()["type"] == "webhook.test"
    webhooks_send_due()
    (payload,) = receiver.verified(created["secret"])
    assert payload["type"] == "webhook.test"
    assert payload["id"].startswith("evt_")
    assert payload["data"]["webhook_id"] == created["webhook_id"]
    page = alice.client.get(f"/rest/v1/webhooks/{created['webhook_id']}/deliveries").json()
    assert page["total_results"] == 1
    (row,) = page["results"]
    assert row["event_id"] == payload["id"]
    assert row["delivered"] is True and row["attempt_count"] == 1
    assert row["last_status_code"] == 200


def test_a_rotated_secret_signs_alongside_the_old_one(alice, receiver):
    created = create(alice, receiver.url).json()
    rotated = alice.client.post(f"/rest/v1/webhooks/{created['webhook_id']}/rotate_secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != created["secret"]
    alice.client.post(f"/rest/v1/webhooks/{created['webhook_id']}/test")
    webhooks_send_due()
    # Receivers on either secret verify the same post.
    assert receiver.verified(created["secret"]) == receiver.verified(new_secret)
    assert len(receiver.posts[0].headers["webhook-signature"].split(" ")) == 2


def test_deliveries_paging_is_checked(alice, receiver):
    webhook_id = create(alice, receiver.url).json()["webhook_id"]
    response = alice.client.get(f"/rest/v1/webhooks/{webhook_id}/deliveries?limit=0&colour=red")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "colour is not a parameter here",
        "limit must be a whole number from 1 to 1000",
    ]


def test_the_schema_documents_the_new_endpoints(client):
    schema = client.get("/rest/v1/schema", HTTP_ACCEPT="application/json").json()
    for path in [
        "/rest/v1/webhooks",
        "/rest/v1/webhooks/{webhook_id}",
        "/rest/v1/webhooks/{webhook_id}/rotate_secret",
        "/rest/v1/webhooks/{webhook_id}/test",
        "/rest/v1/webhooks/{webhook_id}/deliveries",
        "/rest/v1/suppressions",
        "/rest/v1/suppressions/{email_address}",
    ]:
        assert path in schema["paths"], path
