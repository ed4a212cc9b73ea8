"""Schemathesis against the real web server: every operation of /rest/v1/schema, every phase
(the stateful one included), and no answer may be a 5xx. A short, bounded run with a fixed
seed, so a regression fails CI the same way every time; docs/api.md ("Fuzzing") has the long
run (5,000+ requests, on PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.factories import AccountFactory, ApiCredentialFactory
from tests.mailservers import free_port
from tests.worker import ROOT, database_url

KEY = "fuzz-secure-key-0123456789abcdef0123456789"


def wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the web server exited")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or still starting
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@pytest.fixture
def web_server(transactional_db, tmp_path):
    """gunicorn on the test database; the authentication throttle off, since schemathesis
    sends wrong credentials on purpose and would otherwise be answered 429 from then on."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "API_AUTH_FAILURE_LIMIT": "0",
        "DEBUG": "False",
        "LOG_LEVEL": "WARNING",
        "TRACKING_EVENT_FLUSH_INTERVAL": "0",
        "DELIVERY_WAKEUP_INTERVAL": "0",
        # Webhook URLs are taken as they are, not resolved: the fuzzed host names would
        # otherwise be looked up through the system's resolver, off this machine.
        "WEBHOOK_ALLOW_PRIVATE": "1",
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "iovox_email.wsgi", "--workers=2",
         f"--bind=127.0.0.1:{port}", "--log-level=warning", "--timeout=60"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_up(f"http://127.0.0.1:{port}/healthz", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.mark.fuzz
def test_schemathesis_finds_no_server_error(web_server, tmp_path):
    ApiCredentialFactory(account=AccountFactory(name="fuzz"), username="fuzz", secure_key=KEY)
    command = [
        str(Path(sys.executable).parent / "st"), "run", f"{web_server}/rest/v1/schema",
        "-H", "username: fuzz", "-H", f"secureKey: {KEY}",
        "--checks", "not_a_server_error",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--max-examples", "15", "--max-time", "40", "--seed", "20261204",
        "--workers", "1", "--request-timeout", "20",
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
