"""Every cross-account access is a 404, and nothing of another account can be attached."""

from __future__ import annotations

import pytest

from tests.factories import ContactFactory, LinkFactory, NodeFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def bobs(bob):
    node = NodeFactory(account=bob.account, node_id="bn")
    contact = ContactFactory(account=bob.account, contact_id="bc")
    link = LinkFactory(node=node, link_id="bl", destination=contact)
    return {"nodes": node.node_id, "links": link.link_id, "contacts": contact.contact_id}


@pytest.mark.parametrize("resource", ["nodes", "links", "contacts"])
@pytest.mark.parametrize("method", ["get", "patch", "put", "delete"])
def test_another_accounts_object_is_a_404(alice, bobs, resource, method):
    response = getattr(alice.client, method)(
        f"/rest/v1/{resource}/{bobs[resource]}", {}, format="json"
    )
    assert response.status_code == 404
    assert response.json()["errors"][0].endswith("does not exist")


@pytest.mark.parametrize("resource", ["nodes", "links", "contacts"])
def test_lists_show_only_the_callers_objects(alice, bobs, resource):
    assert alice.client.get(f"/rest/v1/{resource}").json() == []


def test_alias_of_another_accounts_link_is_a_404(alice, bobs):
    assert alice.client.post("/rest/v1/links/bl/email_address").status_code == 404


def test_another_accounts_node_cannot_be_used(alice, bobs):
    response = alice.client.post(
        "/rest/v1/links", {"link_id": "l", "node_id": "bn", "link_name": "x"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"errors": ["node_id does not exist"]}


def test_another_accounts_contact_cannot_be_a_destination(alice, bobs):
    NodeFactory(account=alice.account, node_id="an")
    response = alice.client.post(
        "/rest/v1/links",
        {"link_id": "l", "node_id": "an", "link_name": "x", "destination_contact_id": "bc"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"errors": ["destination_contact_id does not exist"]}
