"""The worker's scheduled jobs, declared in code. Every `migrate` makes django-q2's Schedule table
match this list (`schedules_sync`, on post_migrate), so they exist without a manual step and
change with the code."""

from __future__ import annotations

from dataclasses import dataclass

from tracking.worker import LOOPS


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    func: str
    minutes: int


# Jobs of other apps are named by dotted path (strings), so tracking imports none of them.
SCHEDULES: list[ScheduledJob] = [
    # The safety net of the resident loops (tracking/worker.py): a run that finds its loop
    # going ends at once; one that finds it stopped (its chain broken) starts it again.
    *(
        ScheduledJob(name=f"iovox:{loop.name}-loop", func=loop.task, minutes=1)
        for loop in LOOPS.values()
    ),
    # Every retention rule, in bounded batches (conversations/retention.py): message content,
    # messages, tracking events, webhook events, raw inbound mail, the limits' counters.
    ScheduledJob(name="iovox:purge", func="conversations.tasks.purge", minutes=10),
    # Our domains' DNS (MX, SPF, DKIM, DMARC) checked; new DKIM keys start signing once seen.
    ScheduledJob(name="iovox:domain-checks", func="conversations.tasks.check_domains", minutes=60),
]


def schedules_sync(*, apps=None, using: str = "default") -> list[str]:
    """Create or update each declared schedule; remove ours that are no longer declared.
    `apps`: the app registry of a migration (post_migrate's), else the project's."""
    if apps is None:
        from django.apps import apps
    Schedule = apps.get_model("django_q", "Schedule")
    schedules = Schedule.objects.using(using)
    names = []
    for job in SCHEDULES:
        fields = {
            "func": job.func,
            "schedule_type": "I",  # Schedule.MINUTES
            "minutes": job.minutes,
            "repeats": -1,
        }
        updated = schedules.filter(name=job.name).update(**fields)
        if not updated:
            schedules.create(name=job.name, **fields)
        names.append(job.name)
    schedules.filter(name__startswith="iovox:").exclude(name__in=names).delete()
    return names


def schedules_sync_after_migrate(sender, using: str = "default", apps=None, **kwargs) -> None:
    """post_migrate of the tracking app (after `migrate`, and `flush`, which passes no `apps`):
    the schedules, once django-q2's table exists."""
    if apps is None:
        from django.apps import apps
    try:
        apps.get_model("django_q", "Schedule")
    except LookupError:  # django_q not migrated (yet)
        return
    schedules_sync(apps=apps, using=using)
