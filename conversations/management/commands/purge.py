"""`python manage.py purge [--dry-run]`: what the scheduled purge does, now (docs/operations.md)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from conversations.retention import purge_run


class Command(BaseCommand):
    help = "Delete what is past its retention (message content, messages, events, inbound mail)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be deleted, delete nothing"
        )

    def handle(self, *args, dry_run: bool, **options):
        counts = purge_run(dry_run=dry_run, run_seconds=float("inf"))
        verb = "would purge" if dry_run else "purged"
        for name, count in counts.items():
            self.stdout.write(f"{verb} {count} {name.replace('_', ' ')}")
        self.stdout.write(
            f"(content after {settings.MESSAGE_CONTENT_RETENTION_DAYS} days, messages after "
            f"{settings.MESSAGE_RETENTION_DAYS}, tracking events after "
            f"{settings.EVENT_RETENTION_DAYS}, webhook events after "
            f"{settings.WEBHOOK_RETENTION_DAYS}, inbound mail after "
            f"{settings.INBOUND_RETENTION_DAYS})"
        )
