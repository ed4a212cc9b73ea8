from __future__ import annotations

import pytest

from tests.factories import ContactFactory, LinkFactory
from tracking.models import Contact


@pytest.fixture
def sales(alice):
    return ContactFactory(
        account=alice.account, contact_id="sales", name="Sales desk", email="sales@x.example"
    )


def test_the_contacts_page_lists_contacts_with_how_many_links_use_them(alice_portal, alice, sales):
    LinkFactory(node__account=alice.account, destination=sales)
    LinkFactory(node__account=alice.account, destination=sales)

    page = alice_portal.get("/contacts/").content.decode()

    assert "Sales desk" in page and "sales@x.example" in page
    assert '<td class="num">2</td>' in page


def test_creating_a_contact_generates_an_id_when_none_is_given(alice_portal, alice):
    response = alice_portal.post("/contacts/new", {"name": "Lettings", "email": "let@x.example"})

    assert response.status_code == 302
    contact = Contact.objects.get(account=alice.account)
    assert contact.name == "Lettings" and contact.email == "let@x.example"
    assert len(contact.contact_id) == 12


def test_creating_a_contact_with_its_own_id(alice_portal, alice):
    alice_portal.post("/contacts/new", {"name": "L", "email": "l@x.example", "contact_id": "let"})

    assert Contact.objects.get(account=alice.account).contact_id == "let"


def test_a_contact_needs_a_valid_email_address(alice_portal, alice):
    response = alice_portal.post("/contacts/new", {"name": "L", "email": "not-an-address"})

    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()
    assert not Contact.objects.exists()


def test_a_duplicate_contact_id_is_refused(alice_portal, sales):
    response = alice_portal.post(
        "/contacts/new", {"name": "Again", "email": "a@x.example", "contact_id": "sales"}
    )

    assert response.status_code == 400
    assert "contact_id sales already exists" in response.content.decode()


def test_editing_a_contact_changes_its_address(alice_portal, sales):
    response = alice_portal.post(
        "/contacts/sales/edit",
        {"name": "Sales desk", "email": "new@x.example", "contact_id": "sales"},
    )

    sales.refresh_from_db()
    assert response.status_code == 302
    assert sales.email == "new@x.example"


def test_deleting_an_unused_contact(alice_portal, sales):
    confirm = alice_portal.get("/contacts/sales/delete")
    response = alice_portal.post("/contacts/sales/delete", follow=True)

    assert "No link uses it" in confirm.content.decode()
    assert not Contact.objects.filter(pk=sales.pk).exists()
    assert "Contact Sales desk deleted." in response.content.decode()


def test_deleting_a_contact_a_link_uses_is_refused_with_a_clear_message(alice_portal, alice, sales):
    LinkFactory(node__account=alice.account, link_id="civic", destination=sales)

    response = alice_portal.post("/contacts/sales/delete", follow=True)

    page = response.content.decode()
    assert Contact.objects.filter(pk=sales.pk).exists()
    assert "Sales desk cannot be deleted: it is the email destination of 1 link(s) (civic)" in page
    assert "flash-error" in page


def test_an_account_without_contacts_sees_an_empty_state(alice_portal):
    assert "No contacts yet" in alice_portal.get("/contacts/").content.decode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/contacts/sales/edit"),
        ("post", "/contacts/sales/edit"),
        ("get", "/contacts/sales/delete"),
        ("post", "/contacts/sales/delete"),
    ],
)
def test_bob_cannot_see_change_or_delete_alices_contacts(bob_portal, sales, method, path):
    data = {"name": "Hacked", "email": "h@x.example", "contact_id": "sales"}
    response = getattr(bob_portal, method)(path, data if method == "post" else {})

    assert response.status_code == 404
    sales.refresh_from_db()
    assert sales.name == "Sales desk"


def test_bob_does_not_see_alices_contacts_in_his_list(bob_portal, sales):
    assert "Sales desk" not in bob_portal.get("/contacts/").content.decode()


def test_the_contacts_page_costs_a_fixed_number_of_queries(
    alice_portal, alice, django_assert_max_num_queries
):
    ContactFactory.create_batch(30, account=alice.account)

    with django_assert_max_num_queries(5):
        response = alice_portal.get("/contacts/")

    assert response.content.decode().count('id="contact-') == 30
