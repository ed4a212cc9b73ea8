"""What an operator points a load balancer and Prometheus at: liveness, readiness and metrics on
the web, the worker and smtpd; JSON logs with the request id and the message."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import requests
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client
from prometheus_client import REGISTRY

from iovox_email import health
from tests.factories import ContactFactory, LinkFactory, MessageFactory
from tests.mailservers import free_port
from tests.worker import ROOT, database_url, deliver_due, stop_worker, wait_until
from tracking.models import Message


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int, **kwargs) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5, **kwargs).text


# --- The web --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_names_each_check_and_healthz_only_says_the_process_answers():
    response = Client().get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"ok": True, "database": "ok", "migrations": "ok", "broker": "ok"}
    assert Client().get("/healthz").json() == {"ok": True}


@pytest.mark.django_db
def test_readyz_is_503_while_a_migration_is_not_applied(monkeypatch):
    monkeypatch.setattr(health, "_migrated", {})
    with connection.cursor() as cursor:  # rolled back with the test
        cursor.execute("DELETE FROM django_migrations WHERE app = 'tracking'")

    response = Client().get("/readyz")

    assert response.status_code == 503
    assert response.json()["migrations"] == "migrations not applied"
    assert response.json()["database"] == "ok"


@pytest.mark.django_db
def test_readyz_checks_the_shared_cache_only_where_there_is_one(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/4"

    assert "cache" in Client().get("/readyz").json()


@pytest.mark.django_db
def test_metrics_count_requests_by_route_pattern_never_by_path(alice):
    route = "rest/v1/nodes/(?P<node_id>[^/]+)$"  # the pattern, as Django reports it
    labels = {"route": route, "method": "GET", "status": "404"}
    before = sample("iovox_http_requests_total", **labels)

    alice.client.get("/rest/v1/nodes/no-such-node")
    text = Client().get("/metrics").content.decode()

    assert sample("iovox_http_requests_total", **labels) == before + 1
    assert "no-such-node" not in text
    assert "iovox_http_request_duration_seconds_bucket" in text


def test_metrics_want_the_bearer_token_when_one_is_set(settings):
    settings.METRICS_TOKEN = "s3cret"

    assert Client().get("/metrics").status_code == 401
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200
    assert b"iovox_deliveries_total" in response.content


@pytest.mark.django_db
def test_a_delivery_counts_its_outcome_transport_and_time_since_acceptance(mail_servers):
    sent = {"outcome": "sent", "transport": "mx"}
    before = sample("iovox_deliveries_total", **sent)
    observed = sample("iovox_delivery_accepted_to_sent_seconds_count", transport="mx")
    message = MessageFactory(recipient_address="bob@example.net", recipient_domain="example.net")
    message.smtp_message_id = f"<{message.message_id.hex}@iovox.email>"
    message.save(update_fields=["smtp_message_id"])

    deliver_due()

    assert sample("iovox_deliveries_total", **sent) == before + 1
    assert sample("iovox_delivery_accepted_to_sent_seconds_count", transport="mx") == observed + 1


@pytest.mark.django_db
def test_an_api_send_is_counted_as_accepted(alice):
    LinkFactory(account=alice.account, link_id="1234", node__account=alice.account)
    before = sample("iovox_sends_accepted_total", direction="api")
    body = {
        "link_id": "1234",
        "sender_address": "bob.bob@iovox.com",
        "sender_name": "Bob",
        "recipient_address": "bob@example.net",
        "recipient_name": "Billy",
        "subject": "Hello",
        "text_content": "Hi",
        "html_content": "<p>Hi</p>",
    }

    response = alice.client.post(
        "/rest/v1/email", json.dumps(body), content_type="application/json"
    )

    assert response.status_code in (200, 201), response.content
    assert sample("iovox_sends_accepted_total", direction="api") == before + 1


# --- Logs -----------------------------------------------------------------------------------


@pytest.fixture
def json_log():
    """The console handler of LOG_FORMAT=json (settings.LOGGING), writing to a buffer."""
    config = django_settings.LOGGING
    formatter_config = dict(config["formatters"]["json"])
    from pythonjsonlogger.json import JsonFormatter

    formatter_config.pop("()")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(**formatter_config))
    from iovox_email.observability import LogContextFilter

    handler.addFilter(LogContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


@pytest.mark.django_db
def test_json_log_lines_carry_the_request_id_and_a_delivery_its_message(json_log, mail_servers):
    response = Client().get("/rest/v1/no-such-thing", HTTP_X_REQUEST_ID="lb-1234")
    assert response["X-Request-ID"] == "lb-1234"
    message = MessageFactory(recipient_address="bob@example.net", recipient_domain="example.net")
    message.smtp_message_id = f"<{message.message_id.hex}@iovox.email>"
    message.save(update_fields=["smtp_message_id"])

    deliver_due()

    lines = json_log()
    not_found = [line for line in lines if line["logger"] == "django.request"]
    assert not_found and not_found[0]["request_id"] == "lb-1234"
    outcome = [line for line in lines if line.get("outcome") == "sent"]
    assert len(outcome) == 1
    assert outcome[0]["level"] == "INFO"
    assert outcome[0]["message_id"] == str(message.message_id)
    assert outcome[0]["account"] == message.account_id


def test_a_request_id_that_is_not_a_sane_token_is_replaced():
    response = Client().get("/healthz", HTTP_X_REQUEST_ID="bad id\u00e9" * 3)

    assert response["X-Request-ID"] != "bad id\u00e9" * 3
    assert len(response["X-Request-ID"]) == 32


def test_django_q2s_task_chatter_is_debug_and_its_cluster_lines_stay():
    from iovox_email.observability import TaskChatterFilter

    def record(module: str) -> logging.LogRecord:
        return logging.LogRecord("django-q", logging.INFO, f"{module}.py", 1, "x", (), None)

    chatter, lifecycle = record("scheduler"), record("cluster")

    assert TaskChatterFilter().filter(chatter) is False
    assert chatter.levelname == "DEBUG"
    assert TaskChatterFilter().filter(lifecycle) is True
    assert lifecycle.levelname == "INFO"


# --- smtpd and the worker, as they run ------------------------------------------------------


def start(command: list[str], health_port: int, **env: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "manage.py", *command, "--health-port", str(health_port)],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url(), "LOG_LEVEL": "WARNING", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return process


def probe(port: int, path: str) -> requests.Response | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    except requests.ConnectionError:
        return None


@pytest.fixture
def smtpd_process(transactional_db):
    port, health_port = free_port(), free_port()
    process = start(["smtpd", "--host", "127.0.0.1", "--port", str(port)], health_port)
    try:
        wait_until(lambda: probe(health_port, "/livez") is not None, timeout=20)
        yield port, health_port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_smtpd_is_ready_once_it_listens_and_can_store_mail_and_counts_what_it_answers(
    smtpd_process,
):
    import smtplib

    port, health_port = smtpd_process
    wait_until(lambda: probe(health_port, "/readyz").status_code == 200, timeout=20)
    ready = probe(health_port, "/readyz").json()
    assert ready["mailstorage"] == "ok" and ready["migrations"] == "ok"
    LinkFactory(email_address="ops_test@iovox.email", destination=ContactFactory())

    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        smtp.sendmail("a@example.org", ["ops_test@iovox.email"], b"Subject: hi\r\n\r\nhello\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            smtp.sendmail("a@example.org", ["nobody@iovox.email"], b"Subject: hi\r\n\r\nx\r\n")

    text = scrape(health_port)
    assert 'iovox_inbound_messages_total{outcome="accepted",reason=""} 1.0' in text
    assert 'iovox_inbound_messages_total{outcome="refused",reason="5.1.1"} 1.0' in text
    assert "iovox_smtp_connections_open" in text


def test_smtpd_without_its_database_is_alive_but_not_ready(transactional_db):
    health_port = free_port()
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    if connection.vendor == "sqlite":
        dead = "sqlite:////nonexistent/directory/db.sqlite3"
    process = start(
        ["smtpd", "--host", "127.0.0.1", "--port", str(free_port())],
        health_port,
        DATABASE_URL=dead,
    )
    try:
        wait_until(lambda: probe(health_port, "/healthz") is not None, timeout=20)
        assert probe(health_port, "/healthz").status_code == 200
        response = probe(health_port, "/readyz")
        assert response.status_code == 503
        assert response.json()["ok"] is False
        assert response.json()["database"] != "ok"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_worker_serves_readiness_and_adds_up_its_task_processes_metrics(
    transactional_db, mail_servers
):
    health_port = free_port()
    message = MessageFactory(recipient_address="bob@example.net", recipient_domain="example.net")
    message.smtp_message_id = f"<{message.message_id.hex}@iovox.email>"
    message.save(update_fields=["smtp_message_id"])
    worker = start(
        ["worker"],
        health_port,
        DELIVERY_LOOPS="1",
        Q_WORKERS="4",
        DNS_NAMESERVERS=mail_servers.dns.nameserver,
        SMTP_DELIVERY_PORT=str(mail_servers.mx.port),
        SMTP_TIMEOUT="2",
        DNS_TIMEOUT="1",
    )
    try:
        wait_until(lambda: Message.objects.filter(disposition="sent").count() == 1, timeout=30)
        assert probe(health_port, "/readyz").json()["ok"] is True
        # The delivery ran in one of the cluster's child processes; the worker's /metrics
        # adds up all of them, and says what is due (nothing, now).
        text = scrape(health_port)
        assert 'iovox_deliveries_total{outcome="sent",transport="mx"} 1.0' in text
        assert "iovox_messages_due 0.0" in text
        assert "iovox_oldest_due_message_age_seconds 0.0" in text
        assert "iovox_webhook_deliveries_pending 0.0" in text
    finally:
        stop_worker(worker)


def test_every_query_of_the_sample_grafana_dashboard_names_only_metrics_we_export():
    from iovox_email.metrics import exported_names

    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    named = {name for expr in exprs for name in re.findall(r"\biovox_\w+", expr)}

    assert len(exprs) >= 12
    assert named - exported_names() == set()
    assert {"iovox_deliveries_total", "iovox_messages_due"} <= named


@pytest.mark.django_db
def test_json_log_lines_of_an_authenticated_api_request_carry_its_account(json_log, alice):
    response = alice.client.get("/rest/v1/nodes/no-such-node", HTTP_X_REQUEST_ID="lb-5678")

    assert response.status_code == 404
    [line] = [line for line in json_log() if line["logger"] == "django.request"]
    assert (line["request_id"], line["account"]) == ("lb-5678", alice.account.pk)
