"""Email addresses as the product reads them."""

from __future__ import annotations


def address_domain(address: str) -> str:
    """The domain of an address, lower-cased: what comes after its last "@" ("" without one)."""
    return address.rpartition("@")[2].strip().lower()
