"""The worker's own bookkeeping."""

from __future__ import annotations

from django.db import models


class WorkerLease(models.Model):
    """One slot for a resident loop of the worker (tracking/worker.py): the loop run named by
    `holder` may work until `expires_at`, and pushes it forward every turn. A run that dies
    stops pushing, so its slot is free again within seconds."""

    name = models.CharField(max_length=50, unique=True)  # "delivery/0", "routing/0"
    holder = models.UUIDField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'free'} until {self.expires_at}"
