"""`/rest/v1/suppressions`: add one or many, list with filters and pages, delete; tenancy."""

from __future__ import annotations

import pytest

from tracking.models import Suppression

pytestmark = pytest.mark.django_db


def test_an_address_is_suppressed_and_listed(alice):
    response = alice.client.post(
        "/rest/v1/suppressions", {"email_address": "Ann@Example.com"}, format="json"
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email_address"] == "ann@example.com"
    assert body["reason"] == "manual"
    page = alice.client.get("/rest/v1/suppressions").json()
    assert page["total_results"] == 1 and page["current_page"] == 1 and page["total_pages"] == 1
    assert page["results"][0]["email_address"] == "ann@example.com"


def test_a_list_of_up_to_1000_is_accepted(alice):
    entries = [{"email_address": f"u{i}@example.com", "reason": "complaint"} for i in range(1000)]
    response = alice.client.post("/rest/v1/suppressions", entries, format="json")
    assert response.status_code == 201
    assert len(response.json()) == 1000
    assert Suppression.objects.filter(account=alice.account, reason="complaint").count() == 1000
    again = alice.client.post("/rest/v1/suppressions", entries[:3], format="json")
    assert again.status_code == 201 and len(again.json()) == 3
    assert Suppression.objects.count() == 1000


def test_too_many_suppressions_in_one_call_is_a_400_naming_it(alice):
    entries = [{"email_address": f"u{i}@example.com"} for i in range(1001)]
    response = alice.client.post("/rest/v1/suppressions", entries, format="json")
    assert response.status_code == 400
    assert response.json() == {"errors": ["suppressions are at most 1000 in one request, not 1001"]}
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"email_address": "nope"}, "email_address"),
        ({"email_address": "a@example.com", "reason": "bored"}, "reason"),
        ([{"email_address": "a@example.com"}, {"email_address": "x"}], "[1].email_address"),
        ([], "suppressions cannot be empty"),
    ],
)
def test_bad_suppressions_are_400s_naming_the_field(alice, body, error):
    response = alice.client.post("/rest/v1/suppressions", body, format="json")
    assert response.status_code == 400
    assert any(error in e for e in response.json()["errors"]), response.json()


def test_filters_and_pages(alice):
    alice.client.post(
        "/rest/v1/suppressions",
        [{"email_address": f"m{i}@example.com", "reason": "manual"} for i in range(5)]
        + [{"email_address": "c@example.com", "reason": "complaint"}],
        format="json",
    )
    page = alice.client.get("/rest/v1/suppressions?reason=manual&limit=2&page=3").json()
    assert page["total_results"] == 5 and page["total_pages"] == 3 and len(page["results"]) == 1
    one = alice.client.get("/rest/v1/suppressions?email_address=C@EXAMPLE.COM").json()
    assert [r["email_address"] for r in one["results"]] == ["c@example.com"]
    dated = alice.client.get("/rest/v1/suppressions?start_date=2999-01-01").json()
    assert dated["total_results"] == 0
    bad = alice.client.get("/rest/v1/suppressions?reason=x&start_date=yesterday&sort=up")
    assert bad.status_code == 400
    assert "sort is not a parameter here" in bad.json()["errors"]


def test_delete_lets_the_address_through_and_is_scoped(alice, bob):
    alice.client.post("/rest/v1/suppressions", {"email_address": "a@example.com"}, format="json")
    assert bob.client.delete("/rest/v1/suppressions/a@example.com").status_code == 404
    assert bob.client.get("/rest/v1/suppressions").json()["total_results"] == 0
    assert alice.client.delete("/rest/v1/suppressions/A@example.com").status_code == 204
    response = alice.client.delete("/rest/v1/suppressions/a@example.com")
    assert response.status_code == 404
    assert response.json() == {"errors": ["email_address is not suppressed"]}
