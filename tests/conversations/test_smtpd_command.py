"""`python manage.py smtpd` as `make run` starts it: a real process on a loopback port."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from tests.mailservers import free_port

BASE = Path(__file__).resolve().parent.parent.parent


def test_smtpd_command_listens_greets_and_stops_on_sigterm():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(BASE / "manage.py"), "smtpd", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        env=os.environ | {"LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = process.stdout.readline()
        assert banner.strip() == f"inbound SMTP listening on 127.0.0.1:{port}"
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
            code, features = smtp.ehlo("client.example")
            assert code == 250
            assert b"SIZE" in features
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - started < 10
