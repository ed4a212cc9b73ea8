from __future__ import annotations

import pytest

from tests.factories import ContactFactory, LinkFactory, MessageFactory, NodeFactory
from tracking.models import Link, Node

pytestmark = pytest.mark.django_db


def test_node_crud(alice):
    created = alice.client.post(
        "/rest/v1/nodes",
        {"node_id": "abc123", "node_name": "Bobs automotive", "node_type": "Dealer"},
        format="json",
    )
    assert created.status_code == 201
    assert created.json() == {
        "node_id": "abc123",
        "node_name": "Bobs automotive",
        "node_type": "Dealer",
    }
    assert alice.client.get("/rest/v1/nodes/abc123").json()["node_name"] == "Bobs automotive"
    patched = alice.client.patch("/rest/v1/nodes/abc123", {"node_name": "Bob's"}, format="json")
    assert patched.json()["node_name"] == "Bob's"
    put = alice.client.put(
        "/rest/v1/nodes/abc123", {"node_id": "abc124", "node_name": "B"}, format="json"
    )
    assert put.status_code == 200 and put.json()["node_id"] == "abc124"
    assert [n["node_id"] for n in alice.client.get("/rest/v1/nodes").json()] == ["abc124"]
    assert alice.client.delete("/rest/v1/nodes/abc124").status_code == 204
    assert not Node.objects.exists()


def test_link_crud_with_destination(alice):
    NodeFactory(account=alice.account, node_id="n1")
    ContactFactory(account=alice.account, contact_id="c1")
    created = alice.client.post(
        "/rest/v1/links",
        {
            "link_id": "xyz789",
            "node_id": "n1",
            "link_name": "Honda Civic",
            "link_type": "Vehicle",
            "destination_contact_id": "c1",
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert created.json() == {
        "link_id": "xyz789",
        "node_id": "n1",
        "link_name": "Honda Civic",
        "link_type": "Vehicle",
        "email_address": None,
        "destination_contact_id": "c1",
    }
    cleared = alice.client.patch(
        "/rest/v1/links/xyz789", {"destination_contact_id": None}, format="json"
    )
    assert cleared.json()["destination_contact_id"] is None
    assert alice.client.delete("/rest/v1/links/xyz789").status_code == 204


def test_numeric_ids_are_taken_as_strings(alice):
    response = alice.client.post(
        "/rest/v1/nodes", {"node_id": 1234, "node_name": "N"}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["node_id"] == "1234"


def test_contact_crud_and_generated_id(alice):
    created = alice.client.post(
        "/rest/v1/contacts", {"name": "Sales", "email": "sales@example.com"}, format="json"
    )
    assert created.status_code == 201
    contact_id = created.json()["contact_id"]
    assert contact_id
    assert alice.client.get(f"/rest/v1/contacts/{contact_id}").json()["email"] == (
        "sales@example.com"
    )
    assert alice.client.delete(f"/rest/v1/contacts/{contact_id}").status_code == 204


def test_every_problem_is_listed_at_once(alice):
    response = alice.client.post("/rest/v1/links", {"link_id": ""}, format="json")
    assert response.status_code == 400
    assert response.json() == {
        "errors": ["link_id cannot be empty", "node_id is required", "link_name is required"]
    }


def test_duplicate_ids_are_refused(alice):
    NodeFactory(account=alice.account, node_id="n1")
    response = alice.client.post(
        "/rest/v1/nodes", {"node_id": "n1", "node_name": "x"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"errors": ["node_id already exists"]}


def test_same_ids_in_two_accounts_do_not_clash(alice, bob):
    NodeFactory(account=bob.account, node_id="n1")
    response = alice.client.post(
        "/rest/v1/nodes", {"node_id": "n1", "node_name": "x"}, format="json"
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    "body, error",
    [
        ({"node_id": "n", "node_name": ["x"]}, "node_name: not a valid string"),
        (
            {"node_id": "n" * 101, "node_name": "x"},
            "node_id: ensure this field has no more than 100 characters",
        ),
        ({"node_id": None, "node_name": "x"}, "node_id cannot be empty"),
    ],
)
def test_wrong_types_and_sizes_are_400s(alice, body, error):
    response = alice.client.post("/rest/v1/nodes", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"errors": [error]}


def test_malformed_json_is_a_400(alice):
    response = alice.client.post("/rest/v1/nodes", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0].startswith("request body is not valid JSON")


def test_a_list_body_is_a_400(alice):
    response = alice.client.post("/rest/v1/nodes", [1, 2], format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == ["Invalid data. Expected a dictionary, but got list."]


def test_too_large_body_is_a_413(alice, settings):
    settings.MAX_REQUEST_SIZE = 1000
    response = alice.client.post(
        "/rest/v1/nodes", {"node_id": "n", "node_name": "x" * 2000}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["errors"][0].startswith("request body is too large")


def test_unsupported_media_type_is_a_415(alice):
    response = alice.client.post("/rest/v1/nodes", "node_id=n", content_type="text/plain")
    assert response.status_code == 415
    assert "errors" in response.json()


def test_unknown_api_path_is_a_json_404(alice):
    response = alice.client.get("/rest/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"errors": ["not found"]}


def test_wrong_method_is_a_405(alice):
    response = alice.client.delete("/rest/v1/nodes")
    assert response.status_code == 405
    assert response.json() == {"errors": ['Method "DELETE" not allowed.']}


def test_deleting_a_node_with_links_is_refused(alice):
    link = LinkFactory(node=NodeFactory(account=alice.account, node_id="n1"))
    response = alice.client.delete("/rest/v1/nodes/n1")
    assert response.status_code == 409
    assert response.json() == {"errors": ["cannot be deleted while links refer to it"]}
    assert Link.objects.filter(pk=link.pk).exists()


def test_deleting_a_link_with_messages_is_refused(alice):
    message = MessageFactory(link=LinkFactory(node=NodeFactory(account=alice.account)))
    response = alice.client.delete(f"/rest/v1/links/{message.link.link_id}")
    assert response.status_code == 409


def test_deleting_a_contact_used_by_a_link_is_refused(alice):
    contact = ContactFactory(account=alice.account, contact_id="c1")
    LinkFactory(node=NodeFactory(account=alice.account), destination=contact)
    assert alice.client.delete("/rest/v1/contacts/c1").status_code == 409


def test_list_endpoints_do_not_query_per_row(alice, django_assert_max_num_queries):
    for _ in range(10):
        LinkFactory(
            node=NodeFactory(account=alice.account),
            destination=ContactFactory(account=alice.account),
        )
    with django_assert_max_num_queries(3):
        assert len(alice.client.get("/rest/v1/links").json()) == 10
