"""Real HTTP receivers on loopback for webhook tests: each records what it was sent.

- `Receiver("ok")` answers 200;
- `Receiver("flaky")` answers 500 to the first post of each event id, then 200;
- `Receiver("hang")` reads the request and never answers (until stopped).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour
        self.posts: list[Post] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.answer(headers)
                with receiver.lock:
                    receiver.posts.append(Post(headers, body, status or 0))
                if status is None:
                    receiver.stopping.wait(30)  # bounded
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, headers: dict[str, str]) -> int | None:
        if self.behaviour == "hang":
            return None
        if self.behaviour == "flaky":
            with self.lock:
                seen = any(
                    p.headers.get("webhook-id") == headers.get("webhook-id") for p in self.posts
                )
            return 200 if seen else 500
        return 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def verified(self, secret: str) -> list[dict]:
        """Every post's payload, each verified as a customer would (raises if one is not)."""
        hook = Webhook(secret)
        with self.lock:
            posts = list(self.posts)
        return [hook.verify(p.body, p.headers) for p in posts]
