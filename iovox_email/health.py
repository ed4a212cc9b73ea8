"""Liveness and readiness, the same for every process (docs/operations.md).

Liveness (`/healthz`, `/livez`) says the process answers; it touches nothing, so a load
balancer or orchestrator never restarts a process because the database is away. Readiness
(`/readyz`) runs django-health-check's checks, plus our own, one after another in the calling
thread: the database answers, its migrations are all applied, the task broker answers, the
cache answers where it is shared (Redis), and, for smtpd, a message can be stored. It is 503
naming each check that failed.

The web serves them as Django views (iovox_email/views.py); the worker and smtpd on a small
HTTP port of their own (iovox_email/probes.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from health_check.base import HealthCheck
from health_check.checks import Cache, Database
from health_check.exceptions import HealthCheckException, ServiceUnavailable

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Migrations(HealthCheck):
    """Every migration of the code this process runs is applied. Once seen applied it stays
    so for the life of the process (its code cannot change), so later probes cost nothing."""

    def run(self) -> None:
        if _migrated.get(DEFAULT_DB_ALIAS):
            return
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            raise ServiceUnavailable("migrations not applied")
        _migrated[DEFAULT_DB_ALIAS] = True


_migrated: dict[str, bool] = {}


@dataclasses.dataclass
class Broker(HealthCheck):
    """django-q2's broker answers (Redis; with the ORM broker, the database)."""

    def run(self) -> None:
        from django_q.brokers import get_broker

        try:
            answered = get_broker().ping()
        except Exception as exc:  # the broker's client raises its own errors
            raise ServiceUnavailable("broker unreachable") from exc
        if answered is False:
            raise ServiceUnavailable("broker unreachable")


@dataclasses.dataclass
class MailStorage(HealthCheck):
    """smtpd can store a message: a raw inbound row is written and rolled back."""

    def run(self) -> None:
        from conversations.models import InboundMessage

        try:
            with transaction.atomic():
                InboundMessage.objects.create(rcpt_to=["probe@invalid"], raw=b"probe")
                transaction.set_rollback(True)
        except Exception as exc:
            raise ServiceUnavailable("cannot store mail") from exc


def readiness_checks(*, stores_mail: bool = False) -> list[HealthCheck]:
    """The checks of a process's readiness: the cache only where it is shared (Redis), since
    a process's own memory is always there; mail storage for smtpd."""
    checks: list[HealthCheck] = [Database(), Migrations(), Broker()]
    if settings.REDIS_URL:
        checks.append(Cache())
    if stores_mail:
        checks.append(MailStorage())
    return checks


def _name(check: HealthCheck) -> str:
    return type(check).__name__.lower()


def readiness(checks: list[HealthCheck]) -> tuple[bool, dict[str, str]]:
    """Run `checks` one after another in this thread; (all passed, {check: "ok" or why not})."""
    results: dict[str, str] = {}
    for check in checks:
        try:
            if inspect.iscoroutinefunction(check.run):
                asyncio.run(check.run())
            else:
                check.run()
        except HealthCheckException as exc:
            results[_name(check)] = exc.message
        except Exception:
            log.exception("readiness check %s failed", _name(check))
            results[_name(check)] = "unavailable"
        else:
            results[_name(check)] = "ok"
    return all(value == "ok" for value in results.values()), results
