from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import NodeFactory, UserFactory

PAGES = [
    "/",
    "/nodes/",
    "/nodes/new",
    "/contacts/",
    "/contacts/new",
    "/communications/",
    "/communications/export.csv",
    "/messages/5a0f2b9e-6c1d-4a55-9d5e-0d6c1f7b2a11",
]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_visitors_are_sent_to_the_login_page(client, db, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_a_user_logs_in_with_the_form_and_lands_on_communication_details(db):
    UserFactory(username="carol")  # password "password"
    client = Client()

    response = client.post("/login/", {"username": "carol", "password": "password"}, follow=True)

    assert response.redirect_chain[-1][0] == "/communications/"
    assert b"Communication Details" in response.content


def test_a_wrong_password_is_refused_with_a_message(db):
    UserFactory(username="carol")

    response = Client().post("/login/", {"username": "carol", "password": "nope"})

    assert response.status_code == 200
    assert "didn't match" in response.content.decode()


def test_logging_out_ends_the_session(alice_portal):
    response = alice_portal.post("/logout/")

    assert response.status_code == 302
    assert alice_portal.get("/nodes/").status_code == 302


def test_staff_without_an_account_are_sent_to_admin(db):
    staff = UserFactory(username="support", account=None, is_staff=True)
    client = Client()
    client.force_login(staff)

    response = client.get("/nodes/")

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


def test_a_user_without_an_account_is_told_why_there_is_nothing_to_see(db):
    user = UserFactory(username="orphan", account=None)
    client = Client()
    client.force_login(user)

    response = client.get("/communications/")

    assert response.status_code == 403
    assert b"belongs to no account" in response.content


def test_pages_show_the_users_account_name(alice_portal, alice):
    NodeFactory(account=alice.account)

    response = alice_portal.get("/nodes/")

    assert b'class="account-chip"' in response.content
    assert alice.account.name.encode() in response.content


def test_the_stylesheet_and_htmx_are_served_from_our_own_static_files(alice_portal):
    css = alice_portal.get("/static/portal/portal.css")
    htmx = alice_portal.get("/static/vendor/htmx.min.js")

    assert css.status_code == 200 and htmx.status_code == 200
    assert b".kpi" in b"".join(css.streaming_content)
