"""Small formatting filters of the portal's templates."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from django import template

register = template.Library()


@register.filter
def percent(value: float | None) -> str:
    """0.4567 -> "45.7%"; None (nothing to divide by) -> "—"."""
    return "—" if value is None else f"{value * 100:.1f}%"


@register.filter
def percent_of(part: int, whole: int) -> str:
    return percent(part / whole if whole else None)


@register.filter
def drop_param(querystring: str, name: str) -> str:
    """A query string without one parameter."""
    return urlencode([(k, v) for k, v in parse_qsl(querystring) if k != name])
