from django.core.management.base import BaseCommand

from tracking.schedules import schedules_sync


class Command(BaseCommand):
    help = "Create or update the worker's scheduled jobs declared in tracking/schedules.py."

    def handle(self, *args, **options):
        names = schedules_sync()
        self.stdout.write(f"{len(names)} schedule(s): {', '.join(names) or 'none'}")
