#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import atexit
import os
import shutil
import sys
import tempfile


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "iovox_email.settings")
    if sys.argv[1:2] in (["worker"], ["qcluster"]) and not os.environ.get(
        "PROMETHEUS_MULTIPROC_DIR"
    ):
        # The worker's tasks run in child processes: their metrics are kept in files that its
        # /metrics adds up (iovox_email/metrics.py). prometheus-client reads this variable when
        # it is imported, so it is set before anything is; a fresh directory per start, so no
        # earlier run's counts are added in.
        metrics_dir = tempfile.mkdtemp(prefix="iovox-worker-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
