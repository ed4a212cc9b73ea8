"""Several machines as one system (docs/deploy.md): two web servers (gunicorn, two workers
each), two workers (`manage.py worker`) and two smtpd, each on ports of its own, sharing one
PostgreSQL and one Redis, under a bounded load of API sends, tracking hits and inbound mail
through both webs and both smtpds. Halfway, one of each is killed with SIGKILL (its whole
process group, as a machine that dies); the rest of the load goes to the survivors.

Afterwards:
- every send answered 201 is delivered to the MX at least once, and a message delivered more
  than once was in flight on a claim when the worker died (delivery is at-least-once: a worker
  killed between the MX's 250 and the commit of that outcome leaves the message claimed, and
  it is sent again once the claim lapses); at most the dead worker's connections times its
  batch size are;
- every inbound message answered 250 is stored once and routed exactly once (one message
  made from it), and forwarded;
- no tracking hit is counted twice: a message's opens are at most the hits answered, and at
  least those answered by the web that survived (the killed one's last half second of
  buffered hits may be lost with it);
- the surviving web's /metrics adds up both of its gunicorn workers;
- a key revoked (anywhere) stops working on a web that had it cached within
  API_CACHE_SECONDS.

PostgreSQL and Redis only (`.ci/run` starts them); skipped on SQLite.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from conversations.models import InboundMessage
from tests.conversations.conftest import eml
from tests.factories import ContactFactory, LinkFactory
from tests.mailservers import free_port
from tests.worker import ROOT, database_url, wait_until
from tracking.engagement import tokens
from tracking.models import Disposition, Message, WorkerLease
from tracking.services.accounts import credential_rotate

pytestmark = [pytest.mark.multinode, pytest.mark.django_db(transaction=True)]

REDIS_URL = "redis://127.0.0.1:6379/4"
SENDS = 80  # through the webs, half before the kill
INBOUND = 20  # through the smtpds, half before the kill
ALIAS = "multinode_test@iovox.email"
CONNECTIONS, BATCH = 2, 10  # each worker's: what one dead worker can have in flight
LOCK_SECONDS = 8  # a live worker renews its claims every third of it, even on a busy machine
CACHE_SECONDS = 2.0
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0"


@pytest.fixture
def shared_services():
    if connection.vendor != "postgresql":
        pytest.skip("several machines share PostgreSQL and Redis")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    client.flushdb()  # db 4: this test's broker queue and cache only
    yield
    client.flushdb()


class Node:
    """One process (and its children) of one 'machine', with its own log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self.log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as one
        )

    def kill(self) -> None:
        """SIGKILL to the whole group: the machine is gone."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (a graceful stop: gunicorn's workers write their buffered hits), then
        SIGKILL to whatever is left of the group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def log(self) -> str:
        return f"--- {self.name}\n" + self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def machines(shared_services, mail_servers, tmp_path):
    """Two of each process, each pair on its own ports; stopped (or killed) at the end."""
    base = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": REDIS_URL,
        "DEBUG": "False",
        "LOG_LEVEL": "WARNING",
        "API_CACHE_SECONDS": str(CACHE_SECONDS),
        "DNS_NAMESERVERS": mail_servers.dns.nameserver,
        "SMTP_DELIVERY_PORT": str(mail_servers.mx.port),
        "SMTP_TIMEOUT": "5",
        "DNS_TIMEOUT": "2",
        "DELIVERY_LOOPS": "2",
        "DELIVERY_CONNECTIONS": str(CONNECTIONS),
        "DELIVERY_BATCH_SIZE": str(BATCH),
        "DELIVERY_LOCK_SECONDS": str(LOCK_SECONDS),
        "Q_WORKERS": "5",
    }
    nodes: dict[str, Node] = {}
    ports = {name: free_port() for name in ("web1", "web2", "worker1", "worker2")}
    ports |= {name: free_port() for name in ("smtpd1", "smtpd2", "smtpd1-health", "smtpd2-health")}

    def start(name: str) -> None:
        n = name[-1]
        if name.startswith("web"):
            metrics_dir = tmp_path / f"{name}-metrics"
            metrics_dir.mkdir()
            args = [
                str(Path(sys.executable).parent / "gunicorn"),
                "iovox_email.wsgi",
                "--workers=2",
                f"--bind=127.0.0.1:{ports[name]}",
                "--log-level=warning",
            ]
            env = {**base, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        elif name.startswith("worker"):
            args = [sys.executable, "manage.py", "worker", "--health-port", str(ports[name])]
            env = base
        else:
            args = [
                sys.executable,
                "manage.py",
                "smtpd",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports[name]),
                "--health-port",
                str(ports[f"smtpd{n}-health"]),
            ]
            env = base
        nodes[name] = Node(name, args, env, tmp_path)  # fmt: skip

    try:
        # worker1 first, so it runs every resident loop (both delivery slots, routing,
        # webhooks) and worker2 none: killing worker1 leaves worker2 to take them all over.
        start("worker1")
        held = WorkerLease.objects.filter(holder__isnull=False)
        wait_until(lambda: held.count() == 4, timeout=60, step=0.2)
        for name in ("web1", "web2", "worker2", "smtpd1", "smtpd2"):
            start(name)
        probes = [ports[name] for name in ("web1", "web2", "worker1", "worker2")]
        probes += [ports["smtpd1-health"], ports["smtpd2-health"]]
        for port in probes:
            wait_until(lambda port=port: ready(port), timeout=60, step=0.2)
        yield nodes, ports
    finally:
        for node in nodes.values():
            node.kill()


def ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


class Load:
    """The load, and what each web and smtpd answered."""

    def __init__(self, alice, ports: dict[str, int]) -> None:
        self.alice = alice
        self.ports = ports
        self.lock = threading.Lock()
        self.accepted: dict[str, str] = {}  # message_id -> the web that answered 201
        self.hits: Counter[tuple[str, str]] = Counter()  # (message_id, web) -> hits answered
        self.inbound_accepted: list[str] = []  # subjects answered 250

    def send(self, n: int, web: str) -> None:
        body = {
            "link_id": "1234",
            "sender_address": "bob.bob@iovox.com",
            "sender_name": "Bob",
            "recipient_address": f"r{n}@example.net",
            "recipient_name": "R",
            "subject": f"send {n}",
            "text_content": "hello",
            "html_content": "<p>hello</p>",
        }
        headers = {"username": self.alice.credential.username, "secureKey": self.alice.secure_key}
        try:
            response = requests.post(
                f"http://127.0.0.1:{self.ports[web]}/rest/v1/email",
                json=body,
                headers=headers,
                timeout=30,
            )
        except requests.RequestException:
            return
        if response.status_code != 201:
            return
        message_id = response.json()["message_id"]
        with self.lock:
            self.accepted[message_id] = web
        pixel = tokens.open_url(message_id).removeprefix(settings.TRACKING_BASE_URL)
        for _ in range(2):
            try:
                hit = requests.get(
                    f"http://127.0.0.1:{self.ports[web]}{pixel}",
                    headers={"User-Agent": BROWSER},
                    timeout=30,
                )
            except requests.RequestException:
                continue
            if hit.status_code == 200:
                with self.lock:
                    self.hits[(message_id, web)] += 1

    def mail(self, n: int, smtpd: str) -> None:
        raw = eml("gmail_reply.eml", sender="customer@gmail.example", to=ALIAS)
        raw = raw.replace(b"Subject: Re: Your test drive", b"Subject: inbound %d" % n)
        try:
            with smtplib.SMTP("127.0.0.1", self.ports[smtpd], timeout=30) as smtp:
                smtp.sendmail("customer@gmail.example", [ALIAS], raw)
        except (OSError, smtplib.SMTPException):
            return
        with self.lock:
            self.inbound_accepted.append(f"inbound {n}")

    def run(self, sends: range, inbound: range, webs: list[str], smtpds: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=6) as pool:
            jobs = [pool.submit(self.send, n, webs[n % len(webs)]) for n in sends]
            jobs += [pool.submit(self.mail, n, smtpds[n % len(smtpds)]) for n in inbound]
            for job in jobs:
                job.result(timeout=120)


def subject_of(data: bytes) -> str:
    return str(message_from_bytes(data)["Subject"])


def test_two_of_each_process_behave_as_one_system_when_one_of_each_dies(
    machines, mail_servers, alice
):
    nodes, ports = machines
    LinkFactory(account=alice.account, link_id="1234", node__account=alice.account)
    LinkFactory(email_address=ALIAS, destination=ContactFactory(email="sales@example.net"))
    load = Load(alice, ports)
    mail_servers.mx.rcpt_delay = 0.02  # deliveries take a while: some are in flight at the kill

    load.run(range(SENDS // 2), range(INBOUND // 2), ["web1", "web2"], ["smtpd1", "smtpd2"])
    for name in ("web1", "worker1", "smtpd1"):
        nodes[name].kill()
    # What was claimed when the worker died: the only messages that may be sent twice.
    in_flight = set(
        Message.objects.filter(claim_token__isnull=False).values_list("message_id", flat=True)
    )
    load.run(range(SENDS // 2, SENDS), range(INBOUND // 2, INBOUND), ["web2"], ["smtpd2"])

    logs = lambda: "\n".join(node.log() for node in nodes.values())  # noqa: E731
    assert len(load.accepted) >= SENDS * 3 // 4, logs()
    assert len(load.inbound_accepted) >= INBOUND * 3 // 4, logs()
    routed = InboundMessage.objects.filter(status=InboundMessage.Status.ROUTED)
    waiting = Message.objects.filter(disposition__in=[Disposition.RECEIVED, Disposition.QUEUED])
    # Only worker2 is left, and it ran no loop of its own: what follows is its takeover.
    wait_until(
        lambda: routed.count() >= len(load.inbound_accepted) and not waiting.exists(),
        timeout=60,
        step=0.2,
    )

    # Deliveries (sends and forwards alike): each message at least once; more than once
    # only if it was in flight when its worker died, and no more of them than it could hold.
    delivered = Counter(subject_of(received.data) for received in mail_servers.mx.received)
    subjects = dict(Message.objects.values_list("message_id", "subject"))
    assert {str(m) for m in subjects} >= set(load.accepted)
    assert {m for m, subject in subjects.items() if delivered[subject] < 1} == set()
    twice = {m for m, subject in subjects.items() if delivered[subject] > 1}
    assert twice <= in_flight
    assert len(twice) <= CONNECTIONS * BATCH
    assert Message.objects.exclude(disposition=Disposition.SENT).count() == 0

    # Inbound: each message answered 250 stored once, routed once (one message made of it).
    stored = Counter(
        subject_of(bytes(raw)) for raw in InboundMessage.objects.values_list("raw", flat=True)
    )
    assert {s: stored[s] for s in load.inbound_accepted} == dict.fromkeys(load.inbound_accepted, 1)
    for inbound in InboundMessage.objects.prefetch_related("messages"):
        assert inbound.status == InboundMessage.Status.ROUTED
        assert len(inbound.messages.all()) == 1

    # The surviving web's /metrics adds up both of its gunicorn workers.
    from_web2 = sum(1 for web in load.accepted.values() if web == "web2")
    text = requests.get(f"http://127.0.0.1:{ports['web2']}/metrics", timeout=10).text
    assert f'iovox_sends_accepted_total{{direction="api"}} {float(from_web2)}' in text

    # A key revoked elsewhere stops working on the web that cached it within the bound.
    nodes_url = f"http://127.0.0.1:{ports['web2']}/rest/v1/nodes"
    old_key = {"username": alice.credential.username, "secureKey": alice.secure_key}
    assert requests.get(nodes_url, headers=old_key, timeout=10).status_code == 200
    credential_rotate(credential=alice.credential)
    revoked_at = time.monotonic()
    answers = []
    for _ in range(200):  # bounded
        started = time.monotonic() - revoked_at
        status = requests.get(nodes_url, headers=old_key, timeout=10).status_code
        answers.append((started, status))
        if status == 401:
            break
        time.sleep(0.05)
    assert answers[-1][1] == 401
    assert all(started < CACHE_SECONDS for started, status in answers if status == 200)

    # Hits: none counted twice; the survivor's all counted (its graceful stop writes them).
    nodes["web2"].stop()
    opens = dict(Message.objects.values_list("message_id", "open_count"))
    for message_id in load.accepted:
        answered = {web: load.hits[(message_id, web)] for web in ("web1", "web2")}
        counted = opens[uuid.UUID(message_id)]
        assert answered["web2"] <= counted <= answered["web1"] + answered["web2"], message_id
