from __future__ import annotations

import re
import uuid

import pytest

from conversations.models import Conversation, ProxyDomain
from conversations.services import (
    ProxyDomainNotUsable,
    conversation_open,
    proxy_domain_add,
)
from tests.factories import LinkFactory, NodeFactory

pytestmark = pytest.mark.django_db

URL = "/rest/v1/email/address/proxy"


@pytest.fixture
def alice_link(alice):
    return LinkFactory(node=NodeFactory(account=alice.account), link_id="abc123")


@pytest.fixture
def shared_domain():
    return proxy_domain_add(domain="example.com")[0]


def entry(**overrides):
    return {
        "link_id": "abc123",
        "sender_address": "bob.bob@iovox.com",
        "recipient_address": "bob@customer.com",
        "proxy_domain": "example.com",
        "proxy_name": "Company Name",
    } | overrides


def test_spec_example_answers_the_spec_array_with_201(alice, alice_link, shared_domain):
    response = alice.client.post(URL, [entry()], format="json")
    assert response.status_code == 201, response.json()
    [body] = response.json()
    assert set(body) == {
        "link_id",
        "sender_address",
        "recipient_address",
        "proxy_address",
        "conversation_id",
    }
    assert body["link_id"] == "abc123"
    assert body["sender_address"] == "bob.bob@iovox.com"
    assert body["recipient_address"] == "bob@customer.com"
    assert re.fullmatch(r"[a-z0-9]{14}@example\.com", body["proxy_address"])
    conversation = Conversation.objects.get(conversation_id=uuid.UUID(body["conversation_id"]))
    assert conversation.proxy_address == body["proxy_address"]
    assert conversation.link == alice_link
    assert conversation.account == alice.account
    assert conversation.proxy_name == "Company Name"
    assert (conversation.party_a_address, conversation.party_b_address) == (
        "bob.bob@iovox.com",
        "bob@customer.com",
    )


def test_several_entries_get_distinct_addresses_in_request_order(alice, alice_link, shared_domain):
    entries = [entry(recipient_address=f"r{i}@customer.com") for i in range(5)]
    response = alice.client.post(URL, entries, format="json")
    assert response.status_code == 201
    body = response.json()
    assert [e["recipient_address"] for e in body] == [f"r{i}@customer.com" for i in range(5)]
    assert len({e["proxy_address"] for e in body}) == 5
    assert Conversation.objects.count() == 5


def test_private_domain_of_the_account_is_usable(alice, alice_link):
    proxy_domain_add(domain="alice-private.example", account=alice.account)
    response = alice.client.post(URL, [entry(proxy_domain="Alice-Private.Example")], format="json")
    assert response.status_code == 201, response.json()
    assert response.json()[0]["proxy_address"].endswith("@alice-private.example")


def test_another_accounts_private_domain_is_refused_like_an_unknown_one(alice, bob, alice_link):
    proxy_domain_add(domain="bob-private.example", account=bob.account)
    for domain in ("bob-private.example", "nowhere.example"):
        response = alice.client.post(URL, [entry(proxy_domain=domain)], format="json")
        assert response.status_code == 400
        assert response.json() == {
            "errors": ["[0].proxy_domain is not configured for your account"]
        }
    assert not Conversation.objects.exists()


def test_another_accounts_link_does_not_exist(alice, bob, shared_domain):
    LinkFactory(node=NodeFactory(account=bob.account), link_id="bobs")
    response = alice.client.post(URL, [entry(link_id="bobs")], format="json")
    assert response.status_code == 400
    assert response.json() == {"errors": ["[0].link_id does not exist"]}


def test_errors_are_prefixed_by_index_and_nothing_is_created(alice, alice_link, shared_domain):
    entries = [
        entry(),
        entry(link_id="missing", sender_address="not-an-address"),
        {"proxy_domain": "example.com"},
    ]
    response = alice.client.post(URL, entries, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "[1].link_id does not exist" in errors
    assert "[1].sender_address is not a valid email address" in errors
    assert "[2].link_id is required" in errors
    assert "[2].sender_address is required" in errors
    assert "[2].recipient_address is required" in errors
    assert not any(e.startswith("[0]") for e in errors)
    assert not Conversation.objects.exists()


@pytest.mark.parametrize(
    "body, error",
    [
        ({"link_id": "abc123"}, "body must be a JSON array of objects"),
        ([], "body must hold at least one entry"),
        ([entry()] * 101, "body cannot hold more than 100 entries"),
        (["just a string"], "[0] must be a JSON object"),
    ],
)
def test_body_shape_is_checked(alice, alice_link, shared_domain, body, error):
    response = alice.client.post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json() == {"errors": [error]}


def test_parties_must_differ_and_stay_outside_our_domains(alice, alice_link, shared_domain):
    entries = [
        entry(recipient_address="BOB.bob@iovox.com"),
        entry(recipient_address="someone@example.com"),
    ]
    response = alice.client.post(URL, entries, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "[0].recipient_address must differ from sender_address",
        "[1].recipient_address cannot be an address on one of our alias, proxy or bounce domains",
    ]


def test_credentials_are_required(client, shared_domain):
    response = client.post(URL, [entry()], content_type="application/json")
    assert response.status_code == 401
    assert "errors" in response.json()


def test_conversation_open_refuses_a_domain_the_account_may_not_use(alice, bob, alice_link):
    proxy_domain_add(domain="bob-private.example", account=bob.account)
    with pytest.raises(ProxyDomainNotUsable, match="proxy_domain is not configured"):
        conversation_open(
            account=alice.account,
            link=alice_link,
            proxy_domain="bob-private.example",
            party_a_address="a@example.net",
            party_b_address="b@example.net",
        )


def test_conversation_open_draws_again_on_a_collision(alice, alice_link, monkeypatch):
    domain = ProxyDomain.objects.create(domain="example.com")
    Conversation.objects.create(
        account=alice.account,
        link=alice_link,
        proxy_domain=domain,
        proxy_address="taken000000000@example.com",
        party_a_address="a@example.net",
        party_b_address="b@example.net",
    )
    draws = iter(["taken000000000", "fresh000000000"])
    monkeypatch.setattr("conversations.services.proxy_local_part_generate", lambda: next(draws))
    conversation = conversation_open(
        account=alice.account,
        link=alice_link,
        proxy_domain="example.com",
        party_a_address="a@example.net",
        party_b_address="b@example.net",
    )
    assert conversation.proxy_address == "fresh000000000@example.com"


def test_each_entry_costs_a_fixed_number_of_queries(
    alice, alice_link, shared_domain, django_assert_max_num_queries
):
    # Per entry: the link and the domain checked, then the domain read and the insert in its
    # savepoint; besides, authentication, the own-domains check and the transaction.
    with django_assert_max_num_queries(6 + 6 * 10):
        response = alice.client.post(URL, [entry()] * 10, format="json")
    assert response.status_code == 201


def test_line_breaks_never_reach_a_header(alice, alice_link, shared_domain):
    response = alice.client.post(
        URL, [entry(proxy_name="Evil\r\nBcc: victim@example.net")], format="json"
    )
    assert response.status_code == 400
    assert response.json() == {
        "errors": ["[0].proxy_name cannot contain line breaks or control characters"]
    }
