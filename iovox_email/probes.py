"""The worker's and smtpd's own small HTTP port (WORKER_HEALTH_PORT, SMTPD_HEALTH_PORT):
`/healthz` and `/livez` (liveness), `/readyz` (readiness, iovox_email/health.py) and
`/metrics` (iovox_email/metrics.py), the same answers as the web's. A thread of the process,
so its liveness is the process's own."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.db import connections

from iovox_email.health import readiness, readiness_checks
from iovox_email.metrics import metrics_authorized, metrics_text

log = logging.getLogger(__name__)


class ProbeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        stores_mail: bool = False,
        backlog: bool = False,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(address, ProbeHandler)
        self.stores_mail = stores_mail
        self.backlog = backlog
        # The process's own part of readiness (smtpd: its listener is bound).
        self.process_ready = ready


class ProbeHandler(BaseHTTPRequestHandler):
    server: ProbeServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/healthz", "/livez"):
                self._json(200, {"ok": True})
            elif path == "/readyz":
                self._readyz()
            elif path == "/metrics":
                self._metrics()
            else:
                self._json(404, {"errors": ["not found"]})
        finally:
            connections.close_all()  # this request's thread ends; so do its connections

    def _readyz(self) -> None:
        ok, results = readiness(readiness_checks(stores_mail=self.server.stores_mail))
        if not self.server.process_ready():
            ok, results["process"] = False, "starting"
        self._json(200 if ok else 503, {"ok": ok, **results})

    def _metrics(self) -> None:
        if not metrics_authorized(self.headers.get("Authorization", "")):
            self._json(401, {"errors": ["a bearer token is required"]})
            return
        body, content_type = metrics_text(backlog=self.server.backlog)
        self._send(200, body, content_type)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # probes every few seconds: not logged
        pass


def probes_start(host: str, port: int, **options) -> ProbeServer | None:
    """Serve the probes on host:port in a daemon thread (port 0: a free port; None: off)."""
    if port is None or port < 0:
        return None
    try:
        server = ProbeServer((host, port), **options)
    except OSError as exc:  # the port taken: the process itself still serves
        log.error("health and metrics not served on %s:%s: %s", host, port, exc)
        return None
    thread = threading.Thread(target=server.serve_forever, name="probes", daemon=True)
    thread.start()
    log.info("health and metrics on http://%s:%s/", host, server.server_address[1])
    return server
