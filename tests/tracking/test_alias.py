from __future__ import annotations

import pytest

from tests.factories import LinkFactory, NodeFactory
from tracking.models import AliasDomain
from tracking.services.directory import alias_local_part, link_generate_alias

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "node, link, expected",
    [
        ("Bobs automotive", "Honda Civic", "bobs-automotive_honda-civic"),
        ("Café Crème", "Ünïcode Link", "cafe-creme_unicode-link"),
        ('  ..Weird<>"Name;  ', "a@b,c", "weird-name_a-b-c"),
        ("日本", "!!!", "node_link"),
        ("N" * 200, "L" * 200, "n" * 28 + "_" + "l" * 28),
    ],
)
def test_local_part_is_safe(node, link, expected):
    assert alias_local_part(node, link) == expected


def test_generate_alias_through_the_api(alice, settings):
    settings.ALIAS_DOMAIN = "iovox.email"
    LinkFactory(
        node=NodeFactory(account=alice.account, node_name="Bobs automotive"),
        link_id="xyz789",
        link_name="Honda Civic",
    )
    response = alice.client.post("/rest/v1/links/xyz789/email_address")
    assert response.status_code == 201
    assert response.json()["email_address"] == "bobs-automotive_honda-civic@iovox.email"
    again = alice.client.post("/rest/v1/links/xyz789/email_address")
    assert again.status_code == 200
    assert again.json()["email_address"] == "bobs-automotive_honda-civic@iovox.email"


def test_collisions_get_a_numeric_suffix_across_accounts(alice, bob, settings):
    settings.ALIAS_DOMAIN = "iovox.email"
    addresses = []
    for actor in (alice, bob, alice):
        link = LinkFactory(
            node=NodeFactory(account=actor.account, node_name="Shop"), link_name="Main"
        )
        addresses.append(link_generate_alias(link=link)[0].email_address)
    assert addresses == [
        "shop_main@iovox.email",
        "shop_main2@iovox.email",
        "shop_main3@iovox.email",
    ]


def test_private_alias_domain_is_used(alice):
    AliasDomain.objects.create(domain="partner.example", account=alice.account)
    link = LinkFactory(node=NodeFactory(account=alice.account, node_name="A"), link_name="B")
    assert link_generate_alias(link=link)[0].email_address == "a_b@partner.example"
