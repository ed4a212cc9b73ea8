"""`python manage.py worker`: django-q2's `qcluster`, plus its health and metrics on
HEALTH_HOST:WORKER_HEALTH_PORT (iovox_email/probes.py), and a watchdog that starts a run of
any resident loop whose run died with its worker (tracking/worker.py, `loops_watch`)."""

from __future__ import annotations

import multiprocessing
import threading

from django.conf import settings
from django_q.management.commands.qcluster import Command as QclusterCommand

from iovox_email.probes import probes_start
from tracking.worker import loops_watch


class Command(QclusterCommand):
    help = "Run the worker (django-q2's cluster) with its health and metrics port."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--health-port",
            type=int,
            default=settings.WORKER_HEALTH_PORT,
            help="health and metrics port (0: any free port; -1: none)",
        )

    def handle(self, *args, health_port: int, **options):
        # The worker's /metrics also carries the backlog gauges: they are the whole system's.
        probes = probes_start(settings.HEALTH_HOST, health_port, backlog=True)
        stop = threading.Event()
        try:
            super().handle(*args, **options)
            # Started once the cluster's processes are forked, so none inherits its database
            # connection. (The probes' requests close theirs as they end.)
            watchdog = threading.Thread(target=loops_watch, args=(stop,), daemon=True)
            watchdog.start()
            # qcluster returns once the cluster has started, and the process then waits for
            # the cluster's processes as it exits; wait here instead, serving the probes
            # meanwhile. A TERM still stops the cluster (django-q2's handler), ending the wait.
            while children := multiprocessing.active_children():
                children[0].join()
        finally:
            stop.set()
            if probes is not None:
                probes.shutdown()
