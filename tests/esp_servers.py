"""Local HTTP servers standing in for the ESPs' send APIs, at the URL anymail is pointed at:
each records what anymail posts and answers as its ESP does (docs of each API), or with the
error it is told to give.

    api = EspApi("mailgun").start()
    settings.ANYMAIL = api.anymail_settings()
    api.error = (400, {"message": "'to' parameter is not a valid address"})
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ApiRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


# What each ESP answers a send it accepts: (status, body).
ACCEPTED: dict[str, tuple[int, dict | None]] = {
    "mailgun": (
        200,
        {"id": "<20261205070000.1.ABCDEF@mg.example>", "message": "Queued. Thank you."},
    ),
    "postmark": (
        200,
        {
            "To": "bob@example.net",
            "SubmittedAt": "2026-12-05T07:00:00.0000000-05:00",
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
            "ErrorCode": 0,
            "Message": "OK",
        },
    ),
    "sendgrid": (202, None),  # no body: anymail makes the id (its anymail_id custom arg)
    "amazon_ses": (
        200,
        {"MessageId": "0100018c2d5a6b1e-1a2b3c4d-5e6f-7a8b-9c0d-e1f2a3b4c5d6-000000"},
    ),
    "sparkpost": (
        200,
        {
            "results": {
                "total_rejected_recipients": 0,
                "total_accepted_recipients": 1,
                "id": "11668787484950529",
            }
        },
    ),
}


WEBHOOK_SECRET = "esp-user:esp-password"  # noqa: S105 (basic auth for the ESP's posts)
MAILGUN_KEY = "key-mailgun-webhook-signing"


class EspApi:
    def __init__(self, esp: str) -> None:
        self.esp = esp
        self.requests: list[ApiRequest] = []
        self.error: tuple[int, dict] | None = None  # answered instead of ACCEPTED when set
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                api.requests.append(ApiRequest(self.path, headers, body))
                status, answer = api.error or ACCEPTED[api.esp]
                data = json.dumps(answer).encode() if answer is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> EspApi:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def anymail_settings(self) -> dict:
        """settings.ANYMAIL pointing anymail's backend for this ESP here, with the secrets of
        its webhooks."""
        webhooks = {"WEBHOOK_SECRET": WEBHOOK_SECRET, "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}
        return (
            webhooks
            | {
                "mailgun": {"MAILGUN_API_KEY": "key-test", "MAILGUN_API_URL": f"{self.url}/v3"},
                "postmark": {
                    "POSTMARK_SERVER_TOKEN": "token-test",
                    "POSTMARK_API_URL": f"{self.url}/",
                },
                "sendgrid": {"SENDGRID_API_KEY": "SG.test", "SENDGRID_API_URL": f"{self.url}/v3/"},
                "amazon_ses": {
                    "AMAZON_SES_CLIENT_PARAMS": {
                        "endpoint_url": self.url,
                        "region_name": "us-east-1",
                        "aws_access_key_id": "AKIDTEST",
                        "aws_secret_access_key": "secret-test",
                    }
                },
                "sparkpost": {
                    "SPARKPOST_API_KEY": "sp-test",
                    "SPARKPOST_API_URL": f"{self.url}/api/v1",
                },
            }[self.esp]
        )
