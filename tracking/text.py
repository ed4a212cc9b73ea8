"""Text read from received mail, as the database's text columns can store it."""

from __future__ import annotations


def text_safe(value: str) -> str:
    """`value` with each NUL (which PostgreSQL refuses in text) as U+FFFD. Received messages
    are stored and passed on as their bytes, NULs included; only the text read from them for
    search, the portal and the records (subjects, names, content, bounce diagnostics, errors)
    goes through here."""
    return value.replace("\x00", "\ufffd")
