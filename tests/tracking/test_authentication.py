from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tracking.models import ApiCredential
from tracking.services.accounts import credential_create, credential_rotate

pytestmark = pytest.mark.django_db


def test_right_credentials_are_accepted(alice):
    assert alice.client.get("/rest/v1/nodes").status_code == 200


def test_missing_headers_are_a_401_in_the_error_shape():
    response = APIClient().get("/rest/v1/nodes")
    assert response.status_code == 401
    assert response.json() == {"errors": ["username and secureKey headers are required"]}


@pytest.mark.parametrize("headers", [{"HTTP_USERNAME": "alice"}, {"HTTP_SECUREKEY": "x"}])
def test_one_missing_header_is_a_401(alice, headers):
    client = APIClient()
    client.credentials(**headers)
    assert client.get("/rest/v1/nodes").status_code == 401


def test_wrong_key_is_a_401(alice):
    client = APIClient()
    client.credentials(HTTP_USERNAME="alice", HTTP_SECUREKEY=alice.secure_key + "x")
    response = client.get("/rest/v1/nodes")
    assert response.status_code == 401
    assert response.json() == {"errors": ["username or secureKey is not valid"]}


def test_another_users_key_is_a_401(alice, bob):
    client = APIClient()
    client.credentials(HTTP_USERNAME="alice", HTTP_SECUREKEY=bob.secure_key)
    assert client.get("/rest/v1/nodes").status_code == 401


def test_inactive_credential_is_a_401(alice):
    ApiCredential.objects.filter(pk=alice.credential.pk).update(is_active=False)
    assert alice.client.get("/rest/v1/nodes").status_code == 401


def test_key_is_stored_hashed_never_in_clear(alice):
    issued = credential_create(account=alice.account, username="alice2")
    stored = ApiCredential.objects.get(username="alice2")
    assert issued.secure_key not in stored.key_hash
    assert len(issued.secure_key) >= 40
    assert stored.key_matches(issued.secure_key)
    assert not stored.key_matches(issued.secure_key[:-1])


def test_rotation_retires_the_old_key(alice):
    new_key = credential_rotate(credential=alice.credential)
    assert alice.client.get("/rest/v1/nodes").status_code == 401
    client = APIClient()
    client.credentials(HTTP_USERNAME="alice", HTTP_SECUREKEY=new_key)
    assert client.get("/rest/v1/nodes").status_code == 200


def test_last_used_is_written_at_most_once_a_minute(alice, django_assert_num_queries):
    import time_machine

    alice.client.get("/rest/v1/nodes")
    first = ApiCredential.objects.get(pk=alice.credential.pk).last_used
    assert first is not None
    # Within the minute: the list only; the credential is cached and no UPDATE is made.
    with django_assert_num_queries(1):
        alice.client.get("/rest/v1/nodes")
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        alice.client.get("/rest/v1/nodes")
    assert ApiCredential.objects.get(pk=alice.credential.pk).last_used > first


def test_a_cached_credential_still_has_its_key_checked(alice):
    assert alice.client.get("/rest/v1/nodes").status_code == 200  # cached now
    client = APIClient()
    client.credentials(HTTP_USERNAME="alice", HTTP_SECUREKEY=alice.secure_key + "x")
    assert client.get("/rest/v1/nodes").status_code == 401


def test_deactivating_a_credential_takes_effect_at_once_in_the_same_process(alice):
    assert alice.client.get("/rest/v1/nodes").status_code == 200  # cached now
    credential = ApiCredential.objects.get(pk=alice.credential.pk)
    credential.is_active = False
    credential.save()  # as the admin does
    assert alice.client.get("/rest/v1/nodes").status_code == 401


def test_another_process_sees_a_change_within_the_cache_time(alice, settings, monkeypatch):
    """A change made elsewhere (here: an UPDATE, which sends no signal) is seen once the
    cached entry is older than API_CACHE_SECONDS."""
    import time

    from tracking import caching

    assert alice.client.get("/rest/v1/nodes").status_code == 200  # cached now
    ApiCredential.objects.filter(pk=alice.credential.pk).update(is_active=False)
    assert alice.client.get("/rest/v1/nodes").status_code == 200  # still cached
    later = time.monotonic() + settings.API_CACHE_SECONDS + 1
    monkeypatch.setattr(caching.time, "monotonic", lambda: later)
    assert alice.client.get("/rest/v1/nodes").status_code == 401


def test_no_caching_with_a_cache_time_of_zero(alice, settings, django_assert_num_queries):
    settings.API_CACHE_SECONDS = 0
    alice.client.get("/rest/v1/nodes")
    with django_assert_num_queries(2):  # the credential and the list, every time
        alice.client.get("/rest/v1/nodes")
