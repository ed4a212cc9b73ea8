"""Inbound SMTP: `python manage.py smtpd` listens on SMTPD_HOST:SMTPD_PORT."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.management.base import BaseCommand

log = logging.getLogger("conversations.smtpd")


class LoggingHandler:
    """Accepts and logs; routing of alias, proxy and bounce mail comes with the inbound work."""

    async def handle_DATA(self, server, session, envelope):
        log.info(
            "received %d bytes from %s for %s",
            len(envelope.content or b""),
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
        )
        return "250 2.0.0 OK"


class Command(BaseCommand):
    help = "Run the inbound SMTP server."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.SMTPD_HOST)
        parser.add_argument("--port", type=int, default=settings.SMTPD_PORT)

    def handle(self, *args, host, port, **options):
        controller = Controller(
            LoggingHandler(),
            hostname=host,
            port=port,
            data_size_limit=settings.MAX_MESSAGE_SIZE,
        )
        controller.start()
        self.stdout.write(f"inbound SMTP listening on {host}:{port}")
        stop = asyncio.Event()
        loop = asyncio.new_event_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            loop.run_until_complete(stop.wait())
        finally:
            controller.stop()
            loop.close()
