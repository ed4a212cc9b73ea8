"""Safe defaults: DEBUG off, a generated (never a public) SECRET_KEY, `check --deploy` clean
with production values, and the HTTPS headers those values turn on."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key
from django.test import Client

from iovox_email.secret_key import PUBLISHED_KEYS, secret_key_from_file

ROOT = Path(__file__).resolve().parents[1]
# What a production deployment sets: a shared key, its public https URL and host name.
PRODUCTION = {
    "SECRET_KEY": get_random_secret_key(),
    "TRACKING_BASE_URL": "https://track.example.com",
    "ALLOWED_HOSTS": "track.example.com",
}
OURS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "DEBUG", "HTTPS", "TRACKING_BASE_URL", "SECURE_")


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py` in a process of its own, with only `env` of the security settings set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(OURS)}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_values():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr


def test_check_deploy_is_clean_behind_a_tls_terminating_proxy():
    env = {**PRODUCTION, "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_deploy_fails_while_the_key_is_generated_per_host():
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = manage("check", "--deploy", **env)
    assert result.returncode == 1
    assert "tracking.E001" in result.stderr and "every host" in result.stderr


def test_with_nothing_set_debug_is_off_and_a_generated_key_is_kept_in_var():
    show = "from django.conf import settings as s; print(s.DEBUG, s.SECRET_KEY)"
    first, second = manage("shell", "-c", show), manage("shell", "-c", show)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    debug, key = first.stdout.splitlines()[-1].split()
    key_file = ROOT / "var" / "secret_key"
    assert debug == "False"
    assert key == key_file.read_text().strip() and len(key) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_a_key_starting_with_a_dollar_is_the_key_not_the_name_of_another_variable():
    # Django's get_random_secret_key can start one with "$"; django-environ would read it as
    # a reference to another variable and leave the key empty (a generated one instead).
    key = "$" + PRODUCTION["SECRET_KEY"][1:]
    show = "from django.conf import settings as s; print(s.SECRET_KEY, s.SECRET_KEY_FALLBACKS)"
    result = manage("shell", "-c", show, SECRET_KEY=key, SECRET_KEY_FALLBACKS=f"$old,{key}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{key} ['$old', '{key}']"


@pytest.mark.parametrize("variable", ["SECRET_KEY", "SECRET_KEY_FALLBACKS"])
def test_the_published_example_key_is_refused_at_start(variable):
    [published] = PUBLISHED_KEYS
    result = manage("check", **{**PRODUCTION, variable: published})
    assert result.returncode != 0
    assert "example key once published" in result.stderr


def _read_key(path: str, queue) -> None:
    queue.put(secret_key_from_file(Path(path)))


def test_processes_starting_together_agree_on_one_generated_key(tmp_path):
    path = tmp_path / "secret_key"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_read_key, args=(str(path), queue)) for _ in range(6)]
    for process in processes:
        process.start()
    keys = {queue.get(timeout=60) for _ in processes}
    for process in processes:
        process.join(timeout=60)
    assert keys == {path.read_text().strip()}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # no drafts left behind


def test_an_unusable_key_file_is_a_clear_error(tmp_path):
    (tmp_path / "secret_key").write_text("short\n")
    with pytest.raises(ImproperlyConfigured, match="no usable key"):
        secret_key_from_file(tmp_path / "secret_key")
    with pytest.raises(ImproperlyConfigured, match="cannot be read or created"):
        secret_key_from_file(tmp_path / "secret_key" / "below-a-file")


# --- What the HTTPS settings do to responses ------------------------------------------------


@pytest.fixture
def https(settings):
    """The settings PRODUCTION derives from an https TRACKING_BASE_URL."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True


@pytest.mark.django_db
def test_over_https_pages_carry_hsts_secure_cookies_and_strict_headers(https):
    client = Client()
    assert client.get("/login/").status_code == 301  # plain HTTP is redirected
    response = client.get("/login/", secure=True)
    assert response.status_code == 200
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response.cookies["csrftoken"]["secure"] is True


@pytest.mark.django_db
def test_the_health_probe_is_answered_over_plain_http(https):
    assert Client().get("/healthz").status_code == 200


def test_defaults_are_the_safe_ones_for_this_test_run():
    assert django_settings.SECURE_CONTENT_TYPE_NOSNIFF is True
    assert "'unsafe-inline'" not in str(django_settings.CONTENT_SECURITY_POLICY)
    assert "'unsafe-eval'" not in str(django_settings.CONTENT_SECURITY_POLICY)
