"""The SECRET_KEY of an installation that does not set one: generated once into var/ and
reused, so `make run`, the tests and a fresh clone need nothing configured and no key is
ever a public string. One host only: every host that signs or checks click links and bounce
addresses must share one key, so `manage.py check --deploy` fails while this file is in use
(tracking/checks.py)."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

# The key .env.example and the settings carried before keys were generated: published, so
# anyone could sign click links and bounce addresses with it.
PUBLISHED_KEYS = frozenset({"dev-insecure-change-me-0123456789abcdefghijklmnopqrstuvwxyz"})


def secret_key_from_file(path: Path) -> str:
    """The key stored at `path`. On first use a random key is written there, readable by this
    user only (0600). Processes starting together agree on one key: each writes a complete
    file of its own and links it into place, and the first link wins."""
    try:
        if not path.exists():
            _create(path)
        key = path.read_text().strip()
    except OSError as error:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and {path} cannot be read or created ({error}). "
            "Set SECRET_KEY (the same on every host)."
        ) from error
    if len(key) < 50:
        raise ImproperlyConfigured(f"{path} holds no usable key: delete it or set SECRET_KEY.")
    return key


def secret_key_check_published(*keys: str) -> None:
    """Refuse to start with a key that was published."""
    if PUBLISHED_KEYS.intersection(keys):
        raise ImproperlyConfigured(
            "SECRET_KEY or SECRET_KEY_FALLBACKS holds the example key once published in "
            ".env.example: anyone can sign click links with it. Remove it (unset SECRET_KEY "
            "to have a key generated into var/)."
        )


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(get_random_secret_key() + "\n")
        os.link(draft, path)
    except FileExistsError:
        pass  # another process was first; its key is the one
    finally:
        draft.unlink(missing_ok=True)
