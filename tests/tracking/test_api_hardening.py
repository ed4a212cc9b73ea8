"""Issue 12, the API's side: header injection through every line break a mail reader knows,
NUL bytes (PostgreSQL's 500s), errors outside the contract, and login throttling."""

from __future__ import annotations

import email
import json
from datetime import timedelta
from email.policy import default as default_policy

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import LinkFactory, MessageFactory, NodeFactory, UserFactory
from tests.mailservers import free_port
from tests.worker import deliver_due
from tracking.delivery.compose import message_build_mime
from tracking.engagement import tokens
from tracking.headers import HeaderInjection
from tracking.models import ApiCredential, Contact, Disposition, Link, Message, Node

pytestmark = pytest.mark.django_db

# Every character some reader of a message takes for the end of a line: str.splitlines()'s
# (what Python's email package splits headers on), plus NUL and a C1 control.
LINE_BREAKS = ["\r", "\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
CONTROLS = [*LINE_BREAKS, "\x00", "\t", "\x1b", "\x7f", "\x9b"]


@pytest.fixture
def link(alice):
    return LinkFactory(account=alice.account, link_id="1234", node__account=alice.account)


def send_body(**overrides) -> dict:
    body = {
        "link_id": "1234",
        "sender_address": "bob.bob@iovox.com",
        "sender_name": "Bob Bob",
        "recipient_address": "bob@example.net",
        "recipient_name": "Billy Bob",
        "subject": "This is an E-Mail",
        "text_content": "This is plain text",
        "html_content": "<html><body>This is HTML</body></html>",
    }
    body.update(overrides)
    return body


def post_json(client, url: str, body) -> object:
    return client.post(url, json.dumps(body), content_type="application/json")


# --- 1. Header injection ---------------------------------------------------------------------


def test_the_reported_form_feed_subject_is_refused_and_nothing_is_stored(alice, link):
    body = send_body(subject="Invoice\u000cReply-To : attacker@evil.example")

    response = post_json(alice.client, "/rest/v1/email", body)

    assert response.status_code == 400
    assert response.json() == {
        "errors": ["subject cannot contain line breaks or control characters"]
    }
    assert not Message.objects.exists()


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize(
    "field", ["subject", "sender_name", "recipient_name", "sender_address", "recipient_address"]
)
def test_no_header_bound_field_takes_a_line_break_or_control_character(alice, link, field, char):
    value = send_body()[field]
    body = send_body(**{field: value[:3] + char + "Reply-To: attacker@evil.example"})

    response = post_json(alice.client, "/rest/v1/email", body)

    assert response.status_code == 400
    # A NUL is refused for every field before any serializer sees it.
    problem = (
        "cannot contain NUL characters or lone surrogates"
        if char == "\x00"
        else "cannot contain line breaks or control characters"
    )
    assert response.json() == {"errors": [f"{field} {problem}"]}


@pytest.mark.parametrize("char", LINE_BREAKS, ids=[f"U+{ord(c):04X}" for c in LINE_BREAKS])
def test_attachment_filename_type_and_id_take_no_line_break(alice, link, char):
    attachments = [
        {"disposition": "attachment", "type": "text/plain", "body": "eA==",
         "filename": f"a{char}Bcc: x@evil.example"},
        {"disposition": "inline", "type": "text/plain", "body": "eA==", "id": f"p{char}1"},
        {"disposition": "attachment", "type": f"text/plain{char}", "body": "eA==",
         "filename": "a.txt"},
    ]  # fmt: skip

    response = post_json(alice.client, "/rest/v1/email", send_body(attachments=attachments))

    assert response.status_code == 400
    assert response.json()["errors"] == [
        "attachments[0].filename cannot contain line breaks or control characters",
        "attachments[1].id cannot contain line breaks or control characters",
        "attachments[2].type cannot contain line breaks or control characters",
    ]


@pytest.mark.parametrize("field", ["proxy_name", "sender_address", "recipient_address"])
def test_the_proxy_address_endpoint_refuses_them_too(alice, link, field):
    from conversations.models import ProxyDomain

    ProxyDomain.objects.create(domain="proxy.example")
    entry = {
        "link_id": "1234",
        "sender_address": "a@example.org",
        "recipient_address": "b@example.net",
        "proxy_domain": "proxy.example",
        "proxy_name": "Shop",
    }
    entry[field] = entry[field][:1] + "\u2028" + entry[field][1:]

    response = post_json(alice.client, "/rest/v1/email/address/proxy", [entry])

    assert response.status_code == 400
    assert response.json() == {
        "errors": [f"[0].{field} cannot contain line breaks or control characters"]
    }


def test_a_contacts_name_which_forwarded_mail_puts_in_a_header_is_checked(alice):
    response = post_json(alice.client, "/rest/v1/contacts", {"name": "Ann\x85Bcc: x@y.example"})

    assert response.status_code == 400
    assert response.json() == {"errors": ["name cannot contain line breaks or control characters"]}


def test_the_portal_contact_form_applies_the_same_rule(alice):
    user = UserFactory(username="alice-user", account=alice.account)
    client = Client()
    client.force_login(user)

    response = client.post("/contacts/new", {"name": "Ann\x0cB", "email": "ann@example.net"})

    assert response.status_code == 400
    assert "cannot contain line breaks or control characters" in response.content.decode()
    assert not Contact.objects.exists()


def test_the_admin_applies_the_same_rule(alice, admin_client):
    response = admin_client.post(
        "/admin/tracking/contact/add/",
        {"account": alice.account.pk, "contact_id": "c1", "name": "Ann\u2029B", "email": ""},
    )

    assert response.status_code == 200  # the form again, with its error
    assert "cannot contain line breaks or control characters" in response.content.decode()
    assert not Contact.objects.exists()


def test_a_value_that_slipped_past_validation_never_splits_a_header(mail_servers):
    # Stored by a path that skipped validation (an old row, a future bug): the builder
    # refuses it, and the message ends undeliverable with the reason; nothing is sent.
    message = MessageFactory(subject="Invoice\u000cReply-To : attacker@evil.example")
    message.recipient_domain = "example.net"
    message.save(update_fields=["recipient_domain"])

    with pytest.raises(HeaderInjection, match="Subject"):
        message_build_mime(message)
    deliver_due()

    message.refresh_from_db()
    assert message.disposition == Disposition.UNDELIVERABLE
    assert "cannot contain line breaks or control characters" in message.last_smtp_response
    assert mail_servers.mx.received == []


def test_names_with_unicode_still_reach_the_reader_whole(alice, link, mail_servers):
    body = send_body(subject="Grüße 👋 — ok", sender_name="Zoë d'Arc", recipient_name="Ünal")
    response = post_json(alice.client, "/rest/v1/email", body)
    assert response.status_code == 201

    deliver_due()

    parsed = email.message_from_bytes(mail_servers.mx.received[0].data, policy=default_policy)
    assert parsed["Subject"] == "Grüße 👋 — ok"
    assert "Reply-To" not in parsed


# --- 5. NUL bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("resource", ["nodes", "links", "contacts"])
def test_an_id_with_a_nul_in_the_path_is_a_400_not_a_500(alice, resource):
    for method in ("get", "put", "patch", "delete"):
        response = getattr(alice.client, method)(f"/rest/v1/{resource}/a%00", {}, format="json")
        assert response.status_code == 400, (method, response.content)
        assert response.json() == {"errors": ["the path cannot contain control characters"]}


def test_a_link_whose_node_id_holds_a_nul_is_a_400(alice):
    body = {"link_id": "l1", "node_id": "a\u0000", "link_name": "L"}

    response = post_json(alice.client, "/rest/v1/links", body)

    assert response.status_code == 400
    assert response.json() == {
        "errors": ["node_id cannot contain NUL characters or lone surrogates"]
    }


def test_every_id_lookup_in_a_body_is_protected(alice, link):
    NodeFactory(account=alice.account, node_id="n1")
    cases = [
        ("/rest/v1/email", send_body(link_id="a\u0000"), "link_id"),
        ("/rest/v1/links", {"link_id": "l2", "node_id": "n1", "link_name": "L",
                            "destination_contact_id": "c\u0000"}, "destination_contact_id"),
        ("/rest/v1/email/address/proxy", [{"link_id": "a\u0000"}], "[0].link_id"),
    ]  # fmt: skip
    for url, body, where in cases:
        response = post_json(alice.client, url, body)
        assert response.status_code == 400, url
        assert response.json() == {
            "errors": [f"{where} cannot contain NUL characters or lone surrogates"]
        }


def test_a_field_name_with_a_nul_is_a_400(alice):
    response = post_json(alice.client, "/rest/v1/nodes", {"node_id\u0000": "x"})

    assert response.status_code == 400
    assert response.json() == {
        "errors": ["field names cannot contain NUL characters or lone surrogates"]
    }


@pytest.mark.parametrize("param", ["link_id", "node_id", "subject", "fields", "order"])
def test_a_search_parameter_with_a_nul_is_a_400(alice, param):
    response = alice.client.get(f"/rest/v1/email/search?{param}=a%00b")

    assert response.status_code == 400
    assert response.json() == {"errors": [f"{param} cannot contain control characters"]}


def test_a_username_header_with_a_nul_is_a_401(alice):
    client = APIClient()
    client.credentials(HTTP_USERNAME="ali\x00ce", HTTP_SECUREKEY=alice.secure_key)

    response = client.get("/rest/v1/nodes")

    assert response.status_code == 401


def test_a_portal_form_with_a_nul_is_a_plain_400(alice):
    NodeFactory(account=alice.account, node_id="n1")
    user = UserFactory(username="alice-user", account=alice.account)
    client = Client()
    client.force_login(user)

    response = client.post("/links/new", {"node": "n\x00", "link_id": "l1", "link_name": "L"})

    assert response.status_code == 400
    assert response.content == b"Bad request: node cannot contain NUL characters"


def test_a_portal_path_with_a_nul_is_a_plain_400(alice):
    response = Client().get("/nodes/a%00/edit")

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")


# --- 6. Errors in the contract ----------------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_json_is_a_400(alice, depth):
    body = "[" * depth + "]" * depth

    response = alice.client.post("/rest/v1/nodes", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"errors": ["request body is nested too deeply: at most 32 levels"]}


def test_a_body_over_the_size_limit_is_a_413_in_the_error_shape(alice, link, settings):
    settings.MAX_REQUEST_SIZE = settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps(send_body(text_content="x" * 20_000))

    response = alice.client.post("/rest/v1/email", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json() == {
        "errors": [f"request body is too large: {len(body)} bytes, the limit is 10000 bytes"]
    }


@pytest.mark.parametrize(
    ("resource", "body"),
    [
        ("nodes", {"node_id": "a/b", "node_name": "N"}),
        ("links", {"link_id": "a/b", "node_id": "n1", "link_name": "L"}),
        ("contacts", {"contact_id": "a/b", "name": "C"}),
    ],
)
def test_an_id_with_a_slash_is_refused_at_create(alice, resource, body):
    NodeFactory(account=alice.account, node_id="n1")
    id_field = next(iter(body))

    response = post_json(alice.client, f"/rest/v1/{resource}", body)

    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            f"{id_field} may contain only letters, digits and the characters - _ . ~, and must "
            "start with a letter or digit"
        ]
    }


@pytest.mark.parametrize("node_id", ["..", ".hidden", "a b", "a%2Fb", "é", "a?b", "a#b", ""])
def test_ids_outside_the_allow_list_are_refused(alice, node_id):
    response = post_json(alice.client, "/rest/v1/nodes", {"node_id": node_id, "node_name": "N"})
    assert response.status_code == 400
    assert not Node.objects.exists()


def test_an_id_cannot_be_renamed_to_one_with_a_slash_either(alice):
    NodeFactory(account=alice.account, node_id="n1")

    response = alice.client.patch("/rest/v1/nodes/n1", {"node_id": "n/1"}, format="json")

    assert response.status_code == 400
    assert Node.objects.get().node_id == "n1"


def test_the_specs_example_ids_are_accepted(alice):
    for node_id in ("1234", "abc123", "xyz789", "Shop-1_a.b~c"):
        body = {"node_id": node_id, "node_name": "N"}
        assert post_json(alice.client, "/rest/v1/nodes", body).status_code == 201


def test_post_on_a_click_url_is_a_405_not_a_csrf_403(settings):
    client = Client(enforce_csrf_checks=True)  # as a browser's request meets the middleware
    message = MessageFactory()
    click = tokens.click_url(message.message_id, "https://shop.example/").split("/t/", 1)[1]
    pixel = tokens.open_url(message.message_id).split("/t/", 1)[1]

    assert client.post(f"/t/{click}").status_code == 405
    assert client.post(f"/t/{pixel}").status_code == 405
    assert client.put(f"/t/{pixel}").status_code == 405
    assert client.delete(f"/t/{click}").status_code == 405
    assert client.head(f"/t/{pixel}").status_code == 200
    assert client.get(f"/t/{click}").status_code == 302


# The database down: the connection is pointed somewhere nothing listens (PostgreSQL) or
# cannot be opened (SQLite), so every query fails the way an outage makes it fail.


@pytest.fixture
def database_down(transactional_db):
    connection = connections["default"]
    saved = dict(connection.settings_dict)

    def down():
        connection.close()
        if connection.vendor == "postgresql":
            connection.settings_dict.update(HOST="127.0.0.1", PORT=str(free_port()))
        else:
            connection.settings_dict["NAME"] = "/nonexistent/directory/db.sqlite3"

    yield down
    connection.close()
    connection.settings_dict.clear()
    connection.settings_dict.update(saved)


def test_with_the_database_down_the_api_answers_503_with_retry_after(alice, database_down):
    LinkFactory(account=alice.account, link_id="1234", node__account=alice.account)
    database_down()

    for response in (
        post_json(alice.client, "/rest/v1/email", send_body()),
        alice.client.get("/rest/v1/nodes"),
        alice.client.get("/rest/v1/email/search"),
        APIClient().get("/rest/v1/links", HTTP_USERNAME="x", HTTP_SECUREKEY="y"),
    ):
        assert response.status_code == 503
        assert response.json() == {"errors": ["service unavailable, retry later"]}
        assert response["Retry-After"] == "30"


def test_with_the_database_down_the_portal_shows_a_plain_503_page(alice, database_down):
    user = UserFactory(username="alice-user", account=alice.account)
    client = Client()
    client.force_login(user)
    database_down()

    response = client.get("/nodes/")

    assert response.status_code == 503
    assert "Temporarily unavailable" in response.content.decode()
    assert response["Retry-After"] == "30"


def test_readyz_reports_the_database_and_liveness_does_not_depend_on_it(database_down):
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"

    database_down()
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert response.json()["ok"] is False
    assert response.json()["database"] != "ok"
    # Liveness (and the benchmarks' baseline) touches nothing: the process still answers.
    assert Client().get("/livez").json() == {"ok": True}
    assert Client().get("/healthz").json() == {"ok": True}


# --- 7. Login and usernames -------------------------------------------------------------------


@pytest.fixture
def portal_user(alice, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    user = UserFactory(username="alice-user", account=alice.account)
    user.set_password("right-password")
    user.save()
    return user


def log_in(password: str, *, username: str = "alice-user", ip: str = "203.0.113.5"):
    return Client(HTTP_X_FORWARDED_FOR=ip).post(
        "/login/", {"username": username, "password": password}
    )


def test_the_portal_locks_a_username_out_at_the_tenth_failure(portal_user):
    for i in range(9):
        response = log_in("wrong", ip=f"203.0.113.{i + 1}")
        assert response.status_code == 200  # the form again

    response = log_in("wrong", ip="203.0.113.10")
    assert response.status_code == 429
    assert "Too many failed log-ins" in response.content.decode()
    # From yet another address, with the right password: still locked.
    assert log_in("right-password", ip="198.51.100.7").status_code == 429


def test_the_portal_locks_an_ip_out_after_ten_failures(portal_user):
    for i in range(10):
        log_in("wrong", username=f"guess{i}")

    assert log_in("right-password").status_code == 429
    assert log_in("right-password", ip="198.51.100.7").status_code == 302


def test_an_admin_unlocks_a_locked_out_user(portal_user, admin_client):
    from axes.models import AccessAttempt

    for i in range(10):
        log_in("wrong", ip=f"203.0.113.{i + 1}")
    assert log_in("right-password", ip="198.51.100.7").status_code == 429

    assert admin_client.get("/admin/axes/accessattempt/").status_code == 200
    for attempt in AccessAttempt.objects.filter(username="alice-user"):
        response = admin_client.post(
            f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}
        )
        assert response.status_code == 302

    assert log_in("right-password", ip="198.51.100.7").status_code == 302


def api_get(username: str, key: str, ip: str = "203.0.113.5"):
    client = APIClient()
    client.credentials(HTTP_USERNAME=username, HTTP_SECUREKEY=key, HTTP_X_FORWARDED_FOR=ip)
    return client.get("/rest/v1/nodes")


def test_the_api_answers_429_from_the_tenth_wrong_key_for_a_username(alice):
    for i in range(9):
        assert api_get("alice", f"wrong-{i}", ip=f"203.0.113.{i + 1}").status_code == 401
    assert api_get("alice", "wrong-9", ip="203.0.113.10").status_code == 429

    response = api_get("alice", alice.secure_key, ip="198.51.100.7")
    assert response.status_code == 429
    assert response.json() == {"errors": ["too many failed authentications, retry in 900 s"]}
    assert response["Retry-After"] == "900"
    # Another username from another address is not concerned.
    assert api_get("bob", "wrong", ip="198.51.100.8").status_code == 401


def test_the_api_answers_429_from_the_tenth_failure_from_one_ip(alice):
    for i in range(9):
        assert api_get(f"nobody{i}", "wrong").status_code == 401
    assert api_get("nobody9", "wrong").status_code == 429

    assert api_get("alice", alice.secure_key).status_code == 429
    assert api_get("alice", alice.secure_key, ip="198.51.100.7").status_code == 200


def test_the_api_lockout_ends_with_its_window_or_an_admin_unlock(alice, admin_client):
    for i in range(10):
        api_get("alice", f"wrong-{i}", ip=f"203.0.113.{i + 1}")
    assert api_get("alice", alice.secure_key, ip="198.51.100.7").status_code == 429

    with time_machine.travel(timezone.now() + timedelta(seconds=901)):
        assert api_get("alice", alice.secure_key, ip="198.51.100.7").status_code == 200

    for i in range(10):
        api_get("alice", f"wrong-{i}", ip=f"203.0.113.{i + 1}")
    assert api_get("alice", alice.secure_key, ip="198.51.100.7").status_code == 429
    response = admin_client.post(
        "/admin/tracking/apicredential/",
        {"action": "unlock", "_selected_action": [alice.credential.pk]},
    )
    assert response.status_code == 302
    assert api_get("alice", alice.secure_key, ip="198.51.100.7").status_code == 200


def test_an_unknown_username_costs_what_a_wrong_key_costs(alice, django_assert_num_queries):
    # alice's credential is cached by a good request first, as a busy client's would be.
    assert api_get("alice", alice.secure_key, ip="198.51.100.1").status_code == 200
    with django_assert_num_queries(1):
        assert api_get("alice", "wrong", ip="198.51.100.2").status_code == 401
    with django_assert_num_queries(1):
        assert api_get("nobody", "wrong", ip="198.51.100.3").status_code == 401


@pytest.mark.parametrize("username", ["josé", "a b", "a:b", "名前", "a\x00", ""])
def test_create_account_refuses_a_username_a_header_cannot_carry(username):
    with pytest.raises(CommandError, match="username may contain only letters"):
        call_command("create_account", username)
    assert not ApiCredential.objects.exists()


def test_the_credential_admin_refuses_such_a_username(alice, admin_client):
    response = admin_client.post(
        "/admin/tracking/apicredential/add/",
        {"account": alice.account.pk, "username": "josé", "is_active": "on"},
    )

    assert response.status_code == 200
    assert "may contain only letters" in response.content.decode()
    assert not ApiCredential.objects.filter(username="josé").exists()


def test_a_username_of_allowed_characters_authenticates(alice, capsys):
    call_command("create_account", "ops.team+eu@acme-1_x")
    key = next(
        line.split()[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("secureKey:")
    )
    assert api_get("ops.team+eu@acme-1_x", key).status_code == 200


def test_every_id_that_can_be_created_can_be_read_and_deleted(alice):
    NodeFactory(account=alice.account, node_id="n1")
    post_json(alice.client, "/rest/v1/links", {"link_id": "a.b~c-d_e", "node_id": "n1",
                                               "link_name": "L"})  # fmt: skip
    assert alice.client.get("/rest/v1/links/a.b~c-d_e").status_code == 200
    assert alice.client.delete("/rest/v1/links/a.b~c-d_e").status_code == 204
    assert not Link.objects.exists()
