from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.http import HttpRequest
from rest_framework.test import APIClient

from conversations.models import ProxyDomain
from tests.factories import MessageFactory, UserFactory
from tracking.models import Account, Message

pytestmark = pytest.mark.django_db


def test_create_account_prints_working_credentials(capsys):
    call_command("create_account", "acme", "--password", "pw-123456")
    out = capsys.readouterr().out
    key = next(line.split()[1] for line in out.splitlines() if line.startswith("secureKey:"))
    client = APIClient()
    client.credentials(HTTP_USERNAME="acme", HTTP_SECUREKEY=key)
    assert client.get("/rest/v1/nodes").status_code == 200
    # django-axes checks every authentication against its lockouts, which needs the request.
    assert client.login(request=HttpRequest(), username="acme", password="pw-123456")


def test_create_account_with_a_chosen_key_and_twice(capsys):
    call_command("create_account", "acme", "--secure-key", "k" * 40)
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_account", "acme")
    assert Account.objects.count() == 1


def test_add_proxy_domain_shared_then_private(alice, capsys):
    call_command("add_proxy_domain", "Proxy.Example.com")
    assert ProxyDomain.objects.get(domain="proxy.example.com").account is None
    call_command("add_proxy_domain", "proxy.example.com", "--account", "alice")
    assert ProxyDomain.objects.get(domain="proxy.example.com").account == alice.account
    with pytest.raises(CommandError, match="no account"):
        call_command("add_proxy_domain", "x.example", "--account", "nobody")


def test_seed_demo_is_idempotent(capsys):
    call_command("seed_demo")
    count = Message.objects.count()
    call_command("seed_demo")
    assert count > 0 and Message.objects.count() == count
    client = APIClient()
    client.credentials(HTTP_USERNAME="demo", HTTP_SECUREKEY="demo-secure-key")
    assert len(client.get("/rest/v1/links").json()) >= 3


@pytest.fixture
def staff_client(client):
    staff = UserFactory(account=None, is_staff=True, is_superuser=True)
    client.force_login(staff)
    return client


@pytest.mark.parametrize(
    "model",
    ["account", "user", "apicredential", "aliasdomain", "node", "link", "contact", "message"],
)
def test_tracking_admin_pages_load(staff_client, model):
    MessageFactory()
    assert staff_client.get(f"/admin/tracking/{model}/").status_code == 200
    assert staff_client.get(f"/admin/tracking/{model}/?q=x").status_code == 200


@pytest.mark.parametrize("model", ["proxydomain", "conversation", "inboundmessage"])
def test_conversations_admin_pages_load(staff_client, model):
    assert staff_client.get(f"/admin/conversations/{model}/").status_code == 200


def test_admin_creates_a_credential_and_shows_the_key_once(staff_client, alice):
    response = staff_client.post(
        "/admin/tracking/apicredential/add/",
        {"account": alice.account.pk, "username": "alice-ci", "is_active": "on"},
        follow=True,
    )
    text = response.content.decode()
    assert "Copy it now" in text
    message = next(m for m in response.context["messages"] if "secure key" in str(m))
    key = str(message).split(" is ")[1].split(".")[0]
    client = APIClient()
    client.credentials(HTTP_USERNAME="alice-ci", HTTP_SECUREKEY=key)
    assert client.get("/rest/v1/nodes").status_code == 200


def test_message_detail_admin_loads(staff_client):
    message = MessageFactory()
    assert staff_client.get(f"/admin/tracking/message/{message.pk}/change/").status_code == 200


def test_schema_and_docs_are_served(client):
    schema = client.get("/rest/v1/schema")
    assert schema.status_code == 200
    assert b"/rest/v1/links/{link_id}/email_address" in schema.content
    assert client.get("/rest/v1/docs").status_code == 200


def test_schema_documents_the_error_shape_on_every_operation(client):
    schema = client.get("/rest/v1/schema", HTTP_ACCEPT="application/json").json()
    assert schema["components"]["schemas"]["Errors"]["required"] == ["errors"]
    link = schema["paths"]["/rest/v1/links/{link_id}"]
    assert {"400", "401", "404"} <= set(link["get"]["responses"])
    assert {"401", "404", "409"} <= set(link["delete"]["responses"])
    send = schema["paths"]["/rest/v1/email"]["post"]["responses"]
    assert {"400", "401", "413", "415"} <= set(send)
    assert send["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Errors"
    }


def test_schema_says_a_link_may_have_no_alias_yet(client):
    schema = client.get("/rest/v1/schema", HTTP_ACCEPT="application/json").json()
    assert schema["components"]["schemas"]["Link"]["properties"]["email_address"]["nullable"]


def test_admin_deletes_through_the_services_the_api_and_portal_use(staff_client, monkeypatch):
    """One delete service per resource: the admin's single and bulk deletes call it."""
    from tests.factories import ContactFactory, LinkFactory, NodeFactory
    from tracking import admin as tracking_admin
    from tracking.models import Contact, Link, Node
    from tracking.services import directory

    assert tracking_admin.NodeAdmin.delete_service is directory.node_delete
    assert tracking_admin.LinkAdmin.delete_service is directory.link_delete
    assert tracking_admin.ContactAdmin.delete_service is directory.contact_delete
    calls = []
    for admin_class in (tracking_admin.NodeAdmin, tracking_admin.ContactAdmin):
        service = admin_class.delete_service

        def spy(service=service, **row):
            calls.append(tuple((name, obj.pk) for name, obj in row.items()))
            service(**row)

        monkeypatch.setattr(admin_class, "delete_service", staticmethod(spy))
    node = NodeFactory()
    response = staff_client.post(f"/admin/tracking/node/{node.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    contacts = [ContactFactory(), ContactFactory()]
    response = staff_client.post(
        "/admin/tracking/contact/",
        {"action": "delete_selected", "_selected_action": [c.pk for c in contacts], "post": "yes"},
    )
    assert response.status_code == 302
    assert calls[0] == (("node", node.pk),)
    assert sorted(calls[1:]) == sorted((("contact", c.pk),) for c in contacts)
    assert not Node.objects.filter(pk=node.pk).exists()
    assert not Contact.objects.filter(pk__in=[c.pk for c in contacts]).exists()
    link = LinkFactory()
    staff_client.post(f"/admin/tracking/link/{link.pk}/delete/", {"post": "yes"})
    assert not Link.objects.filter(pk=link.pk).exists()


def test_admin_refuses_a_link_whose_node_is_another_account_s(staff_client, alice, bob):
    from tests.factories import NodeFactory
    from tracking.models import Link

    node = NodeFactory(account=bob.account)
    response = staff_client.post(
        "/admin/tracking/link/add/",
        {"account": alice.account.pk, "node": node.pk, "link_id": "l1", "link_name": "L1"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "belongs to another account" in response.content.decode()
    assert not Link.objects.exists()
    response = staff_client.post(
        "/admin/tracking/link/add/",
        {"account": bob.account.pk, "node": node.pk, "link_id": "l1", "link_name": "L1"},
    )
    assert response.status_code == 302
    assert Link.objects.get().node == node
