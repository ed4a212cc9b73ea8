"""A worker killed while running a loop: another worker's loop, ending its run, starts a run
of the dead one's loop, which takes the lapsed slot over (tracking/worker.py, loops_revive)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from tracking.models import WorkerLease
from tracking.worker import loops_revive

pytestmark = pytest.mark.django_db


def enqueued() -> list[str]:
    return sorted(task.task["func"] for task in OrmQ.objects.all())


def test_a_loop_whose_lease_lapsed_while_held_gets_a_new_run():
    past = timezone.now() - timedelta(seconds=1)
    WorkerLease.objects.create(name="routing/0", holder=uuid.uuid4(), expires_at=past)
    WorkerLease.objects.create(name="delivery/1", holder=uuid.uuid4(), expires_at=past)

    loops_revive()

    assert enqueued() == ["conversations.tasks.routing_loop", "tracking.tasks.delivery_loop"]


def test_a_live_lease_or_a_released_one_gets_none():
    future = timezone.now() + timedelta(seconds=5)
    WorkerLease.objects.create(name="routing/0", holder=uuid.uuid4(), expires_at=future)
    WorkerLease.objects.create(name="delivery/0", holder=None, expires_at=None)

    loops_revive()

    assert enqueued() == []
