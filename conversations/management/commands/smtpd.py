"""Inbound SMTP: `python manage.py smtpd` listens on SMTPD_HOST:SMTPD_PORT."""

from __future__ import annotations

import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.inbound.smtp import serve


class Command(BaseCommand):
    help = "Run the inbound SMTP server (alias, proxy and bounce addresses)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.SMTPD_HOST)
        parser.add_argument("--port", type=int, default=settings.SMTPD_PORT)

    def handle(self, *args, host, port, **options):
        asyncio.run(self.run(host, port))

    async def run(self, host: str, port: int) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(bound: int) -> None:
            self.stdout.write(f"inbound SMTP listening on {host}:{bound}")
            self.stdout.flush()

        await serve(host, port, ready=ready, stop=stop)
