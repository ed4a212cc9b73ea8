"""Inbound SMTP: `python manage.py smtpd` listens on SMTPD_HOST:SMTPD_PORT, and serves its
health and metrics on SMTPD_HEALTH_HOST:SMTPD_HEALTH_PORT (iovox_email/probes.py)."""

from __future__ import annotations

import asyncio
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.inbound.smtp import serve
from iovox_email.probes import probes_start


class Command(BaseCommand):
    help = "Run the inbound SMTP server (alias, proxy and bounce addresses)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.SMTPD_HOST)
        parser.add_argument("--port", type=int, default=settings.SMTPD_PORT)
        parser.add_argument(
            "--health-port",
            type=int,
            default=settings.SMTPD_HEALTH_PORT,
            help="health and metrics port (0: any free port; -1: none)",
        )

    def handle(self, *args, host, port, health_port, **options):
        listening = threading.Event()
        probes = probes_start(
            settings.HEALTH_HOST, health_port, stores_mail=True, ready=listening.is_set
        )
        try:
            asyncio.run(self.run(host, port, listening))
        finally:
            if probes is not None:
                probes.shutdown()

    async def run(self, host: str, port: int, listening: threading.Event) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(bound: int) -> None:
            listening.set()
            self.stdout.write(f"inbound SMTP listening on {host}:{bound}")
            self.stdout.flush()

        await serve(host, port, ready=ready, stop=stop)
