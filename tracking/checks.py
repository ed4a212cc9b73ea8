"""System checks of what tracking needs to be safe in production (`manage.py check --deploy`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register


@register(Tags.security, deploy=True)
def secret_key_shared(app_configs, **kwargs) -> list[CheckMessage]:
    """A key generated into var/ is this host's alone: a click link signed by a worker on one
    host would be a 404 on a web server of another, and bounces would be refused."""
    key_file = getattr(settings, "SECRET_KEY_FILE", None)
    if not key_file:
        return []
    return [
        Error(
            f"SECRET_KEY is not set: this host signs click links and bounce addresses with a "
            f"key generated into {key_file}.",
            hint="Set SECRET_KEY to one random value shared by every host (web, worker, smtpd), "
            "for example the content of that file. See docs/security.md.",
            id="tracking.E001",
        )
    ]


@register()
def delivery_transport_configured(app_configs, **kwargs) -> list[CheckMessage]:
    """A transport that cannot be tried leaves its messages `queued`: say so before the
    worker starts (qcluster runs the checks) rather than in every message's last response."""
    from tracking.delivery.transports import transport_problem, transports_configured

    return [
        Error(problem, hint="See docs/transports.md.", id="tracking.E010")
        for transport in transports_configured()
        if (problem := transport_problem(transport))
    ]
