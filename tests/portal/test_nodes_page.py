from __future__ import annotations

import pytest

from portal.forms import NodeForm
from tests.factories import ContactFactory, LinkFactory, NodeFactory
from tracking.models import Link, Node

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def civic(alice):
    node = NodeFactory(account=alice.account, node_id="abc123", node_name="Bobs automotive")
    return LinkFactory(node=node, link_id="xyz789", link_name="Honda Civic")


def test_the_nodes_page_lists_nodes_with_their_links(alice_portal, civic):
    response = alice_portal.get("/nodes/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Bobs automotive" in page and "Honda Civic" in page
    assert "Generate Email Address" in page
    assert "No Email Destination" in page


def test_a_link_with_an_alias_and_destination_shows_both_instead_of_the_buttons(
    alice_portal, alice, civic
):
    contact = ContactFactory(account=alice.account, name="Sales desk", email="sales@x.example")
    Link.objects.filter(pk=civic.pk).update(email_address="a_b@iovox.email", destination=contact)

    page = alice_portal.get("/nodes/").content.decode()

    assert "a_b@iovox.email" in page and "Sales desk" in page
    assert "Generate Email Address" not in page and "No Email Destination" not in page


def test_generate_email_address_gives_the_link_its_alias(alice_portal, civic):
    response = alice_portal.post("/links/xyz789/email-address")

    civic.refresh_from_db()
    assert response.status_code == 302
    assert civic.email_address == "bobs-automotive_honda-civic@iovox.email"
    follow = alice_portal.get(response["Location"]).content.decode()
    assert "bobs-automotive_honda-civic@iovox.email" in follow


def test_generate_email_address_through_htmx_answers_with_the_new_row(alice_portal, civic):
    response = alice_portal.post("/links/xyz789/email-address", **HTMX)

    row = response.content.decode()
    assert response.status_code == 200
    assert row.lstrip().startswith('<tr id="link-xyz789"')
    assert "bobs-automotive_honda-civic@iovox.email" in row
    assert "Email address generated" in row


def test_generating_twice_keeps_the_first_address(alice_portal, civic):
    alice_portal.post("/links/xyz789/email-address")
    response = alice_portal.post("/links/xyz789/email-address", **HTMX)

    assert "already assigned" in response.content.decode()
    assert Link.objects.filter(email_address__startswith="bobs-automotive").count() == 1


def test_generate_email_address_refuses_get(alice_portal, civic):
    assert alice_portal.get("/links/xyz789/email-address").status_code == 405


def test_no_email_destination_opens_an_inline_picker_of_contacts_with_an_address(
    alice_portal, alice, civic
):
    ContactFactory(account=alice.account, name="Sales desk", email="sales@x.example")
    ContactFactory(account=alice.account, name="No address", email="")

    response = alice_portal.get("/links/xyz789/destination", **HTMX)

    picker = response.content.decode()
    assert picker.lstrip().startswith('<form class="picker"')
    assert "Sales desk &lt;sales@x.example&gt;" in picker
    assert "No address" not in picker


def test_choosing_a_contact_inline_sets_the_destination_and_returns_the_row(
    alice_portal, alice, civic
):
    sales = ContactFactory(account=alice.account, contact_id="sales", name="Sales desk")

    response = alice_portal.post("/links/xyz789/destination", {"destination": "sales"}, **HTMX)

    civic.refresh_from_db()
    assert civic.destination == sales
    assert 'id="link-xyz789"' in response.content.decode()
    assert "Sales desk" in response.content.decode()


def test_cancelling_the_picker_changes_nothing(alice_portal, alice, civic):
    ContactFactory(account=alice.account, contact_id="sales")

    response = alice_portal.post(
        "/links/xyz789/destination", {"destination": "sales", "cancel": "1"}, **HTMX
    )

    civic.refresh_from_db()
    assert civic.destination is None
    assert "No Email Destination" in response.content.decode()


def test_the_picker_works_as_a_plain_page_without_javascript(alice_portal, alice, civic):
    sales = ContactFactory(account=alice.account, contact_id="sales", name="Sales desk")

    page = alice_portal.get("/links/xyz789/destination")
    response = alice_portal.post("/links/xyz789/destination", {"destination": "sales"})

    assert page.status_code == 200 and "<html" in page.content.decode()
    assert response.status_code == 302
    civic.refresh_from_db()
    assert civic.destination == sales


def test_choosing_no_email_destination_clears_it(alice_portal, alice, civic):
    Link.objects.filter(pk=civic.pk).update(destination=ContactFactory(account=alice.account))

    alice_portal.post("/links/xyz789/destination", {"destination": ""}, **HTMX)

    civic.refresh_from_db()
    assert civic.destination is None


def test_another_accounts_contact_cannot_be_chosen(alice_portal, bob, civic):
    ContactFactory(account=bob.account, contact_id="bobs")

    response = alice_portal.post("/links/xyz789/destination", {"destination": "bobs"})

    civic.refresh_from_db()
    assert response.status_code == 400
    assert civic.destination is None
    assert "Select a valid choice" in response.content.decode()


def test_creating_a_node_shows_it_on_the_nodes_page(alice_portal, alice):
    response = alice_portal.post(
        "/nodes/new", {"node_id": "n1", "node_name": "Harbour Lettings", "node_type": "Agency"}
    )

    assert response.status_code == 302
    node = Node.objects.get(account=alice.account, node_id="n1")
    assert node.node_name == "Harbour Lettings" and node.node_type == "Agency"
    assert "Node Harbour Lettings created." in alice_portal.get("/nodes/").content.decode()


def test_a_duplicate_node_id_is_refused_in_the_form(alice_portal, civic):
    response = alice_portal.post("/nodes/new", {"node_id": "abc123", "node_name": "Again"})

    assert response.status_code == 400
    assert "node_id abc123 already exists" in response.content.decode()
    assert Node.objects.filter(node_id="abc123").count() == 1


def test_a_node_without_a_name_is_refused_in_the_form(alice_portal, alice):
    response = alice_portal.post("/nodes/new", {"node_id": "n1", "node_name": ""})

    assert response.status_code == 400
    assert "This field is required." in response.content.decode()
    assert not Node.objects.filter(account=alice.account).exists()


def test_the_same_node_id_may_exist_in_another_account(alice_portal, bob):
    NodeFactory(account=bob.account, node_id="shared")

    response = alice_portal.post("/nodes/new", {"node_id": "shared", "node_name": "Mine"})

    assert response.status_code == 302


def test_an_id_with_a_slash_is_refused(alice_portal):
    response = alice_portal.post("/nodes/new", {"node_id": "a/b", "node_name": "X"})

    assert response.status_code == 400
    assert "may contain only letters, digits" in response.content.decode()


def test_editing_a_node_renames_it(alice_portal, civic):
    response = alice_portal.post(
        "/nodes/abc123/edit", {"node_id": "abc123", "node_name": "Renamed", "node_type": ""}
    )

    assert response.status_code == 302
    assert Node.objects.get(node_id="abc123").node_name == "Renamed"


def test_editing_a_node_keeps_its_own_id_but_refuses_anothers(alice_portal, alice, civic):
    NodeFactory(account=alice.account, node_id="other")

    response = alice_portal.post("/nodes/abc123/edit", {"node_id": "other", "node_name": "X"})

    assert response.status_code == 400
    assert "node_id other already exists" in response.content.decode()


def test_creating_a_link_in_a_node_with_a_destination(alice_portal, alice, civic):
    ContactFactory(account=alice.account, contact_id="sales")

    form = alice_portal.get("/links/new?node=abc123")
    response = alice_portal.post(
        "/links/new",
        {
            "node": "abc123",
            "link_id": "yaris",
            "link_name": "Toyota Yaris",
            "link_type": "Vehicle",
            "destination": "sales",
        },
    )

    assert form.status_code == 200 and 'value="abc123" selected' in form.content.decode()
    assert response.status_code == 302
    link = Link.objects.get(account=alice.account, link_id="yaris")
    assert link.node == civic.node and link.destination.contact_id == "sales"


def test_a_duplicate_link_id_is_refused_in_the_form(alice_portal, civic):
    response = alice_portal.post(
        "/links/new", {"node": "abc123", "link_id": "xyz789", "link_name": "Again"}
    )

    assert response.status_code == 400
    assert "link_id xyz789 already exists" in response.content.decode()


def test_a_link_cannot_be_put_in_another_accounts_node(alice_portal, bob):
    NodeFactory(account=bob.account, node_id="bobs-node")

    response = alice_portal.post(
        "/links/new", {"node": "bobs-node", "link_id": "l1", "link_name": "Sneaky"}
    )

    assert response.status_code == 400
    assert not Link.objects.filter(link_id="l1").exists()


def test_the_link_edit_view_offers_the_same_destination_choice(alice_portal, alice, civic):
    ContactFactory(account=alice.account, contact_id="sales", name="Sales desk")

    page = alice_portal.get("/links/xyz789/edit").content.decode()
    response = alice_portal.post(
        "/links/xyz789/edit",
        {"node": "abc123", "link_id": "xyz789", "link_name": "Civic", "destination": "sales"},
    )

    assert "No Email Destination" in page and "Sales desk" in page
    assert "Generate Email Address" in page
    assert response.status_code == 302
    civic.refresh_from_db()
    assert civic.link_name == "Civic" and civic.destination.contact_id == "sales"


def test_searching_the_nodes_page_finds_nodes_by_their_links(alice_portal, alice, civic):
    NodeFactory(account=alice.account, node_name="Carla's Cars")

    page = alice_portal.get("/nodes/?q=civic").content.decode()

    assert "Bobs automotive" in page and "Carla" not in page


def test_an_account_without_nodes_sees_an_empty_state(alice_portal):
    page = alice_portal.get("/nodes/").content.decode()

    assert "No nodes yet" in page and "Create a node" in page


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/nodes/abc123/edit"),
        ("post", "/nodes/abc123/edit"),
        ("get", "/links/xyz789/edit"),
        ("post", "/links/xyz789/edit"),
        ("post", "/links/xyz789/email-address"),
        ("get", "/links/xyz789/destination"),
        ("post", "/links/xyz789/destination"),
        ("get", "/links/new?node=abc123"),
    ],
)
def test_bob_cannot_see_or_change_alices_nodes_and_links(bob_portal, civic, method, path):
    response = getattr(bob_portal, method)(
        path, {"node_name": "Hacked"} if method == "post" else {}
    )

    assert response.status_code == 404
    civic.refresh_from_db()
    assert civic.email_address is None and civic.node.node_name == "Bobs automotive"


def test_bob_does_not_see_alices_nodes_in_his_list(bob_portal, civic):
    assert "Bobs automotive" not in bob_portal.get("/nodes/").content.decode()


def test_the_nodes_page_costs_a_fixed_number_of_queries(
    alice_portal, alice, django_assert_max_num_queries
):
    contact = ContactFactory(account=alice.account)
    for n in range(15):
        node = NodeFactory(account=alice.account)
        for _ in range(4):
            LinkFactory(node=node, destination=contact if n % 2 else None)

    with django_assert_max_num_queries(6):
        response = alice_portal.get("/nodes/")

    assert response.content.decode().count('class="link-row') == 60


def test_many_nodes_are_paged_and_a_search_keeps_its_query_across_pages(alice_portal, alice):
    for n in range(25):
        NodeFactory(account=alice.account, node_id=f"shop{n:02d}", node_name=f"Shop {n:02d}")

    first = alice_portal.get("/nodes/?q=shop").content.decode()
    second = alice_portal.get("/nodes/?q=shop&page=2").content.decode()

    assert first.count('class="card node"') == 20 and second.count('class="card node"') == 5
    assert 'href="?q=shop&amp;page=2"' in first


def test_an_id_taken_between_validation_and_saving_is_a_form_error(alice):
    form = NodeForm({"node_id": "n1", "node_name": "Mine"}, account=alice.account)
    assert form.is_valid()
    NodeFactory(account=alice.account, node_id="n1")  # another request got there first

    assert form.save() is None
    assert form.non_field_errors() == ["This id was taken a moment ago; choose another."]
    assert Node.objects.filter(account=alice.account).count() == 1
