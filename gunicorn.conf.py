"""gunicorn reads this file from the directory it starts in.

With PROMETHEUS_MULTIPROC_DIR set (an empty directory, one per gunicorn master, emptied at
each start), every web worker keeps its metrics in files there and /metrics adds them up; a
worker that exits has its live gauges dropped (docs/deploy.md)."""

import os


def child_exit(server, worker) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
