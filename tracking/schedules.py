"""The worker's scheduled jobs, declared in code. `manage.py setup_schedules` makes django-q2's
Schedule table match this list (idempotent), so nobody clicks schedules into admin."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    func: str
    minutes: int


# Jobs of other apps are named by dotted path (strings), so tracking imports none of them.
SCHEDULES: list[ScheduledJob] = [
    # Re-finds messages that are due: retries whose time has come, tasks that were lost, and
    # claims whose worker died.
    ScheduledJob(name="iovox:delivery-sweep", func="tracking.tasks.sweep_due_messages", minutes=1),
    # Inbound mail whose routing task was lost (or whose worker died) is routed again.
    ScheduledJob(name="iovox:inbound-sweep", func="conversations.tasks.inbound_sweep", minutes=1),
    # Raw inbound mail past INBOUND_RETENTION_DAYS, once routed or refused.
    ScheduledJob(name="iovox:inbound-purge", func="conversations.tasks.inbound_purge", minutes=60),
    # Our domains' DNS (MX, SPF, DKIM, DMARC) checked; new DKIM keys start signing once seen.
    ScheduledJob(name="iovox:domain-checks", func="conversations.tasks.check_domains", minutes=60),
]


def schedules_sync() -> list[str]:
    """Create or update each declared schedule; remove ours that are no longer declared."""
    from django_q.models import Schedule

    names = []
    for job in SCHEDULES:
        Schedule.objects.update_or_create(
            name=job.name,
            defaults={
                "func": job.func,
                "schedule_type": Schedule.MINUTES,
                "minutes": job.minutes,
                "repeats": -1,
            },
        )
        names.append(job.name)
    Schedule.objects.filter(name__startswith="iovox:").exclude(name__in=names).delete()
    return names
