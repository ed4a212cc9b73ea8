"""Real mail infrastructure on loopback for tests and benchmarks: a DNS server (dnspython) that
answers MX/A/AAAA/TXT as configured (SPF, DKIM and DMARC records included), and an SMTP server
(aiosmtpd) standing in for MX hosts.

    dns = DnsServer().start()
    dns.add_mx("example.net", [(10, "mx.example.net")])
    dns.add_a("mx.example.net", "127.0.0.1")
    dns.add_spf("example.net", "v=spf1 ip4:127.0.0.1 -all")
    dns.add_dkim("example.net", "sel1", public_key_base64)
    dns.add_dmarc("example.net", "v=DMARC1; p=reject")
    sink = SmtpSink(starttls=True).start()
    sink.reply_to_rcpt["full@example.net"] = "452 4.2.2 Mailbox full"
    ...
    sink.stop(); dns.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from aiosmtpd.controller import Controller


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class DnsServer:
    """A UDP DNS server on loopback answering from its own records, TTL 0 (nothing cached).

    A name with no record of the asked type but some other record answers NOERROR with no
    data (NoAnswer); a name unknown altogether answers NXDOMAIN; names in `timeouts` get no
    answer at all; names in `servfail` get SERVFAIL.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.records: dict[tuple[str, str], list[str]] = {}
        self.timeouts: set[str] = set()
        self.servfail: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    @staticmethod
    def _key(name: str) -> str:
        return name.lower().rstrip(".") + "."

    def add(self, name: str, rdtype: str, *rdata: str) -> DnsServer:
        self.records.setdefault((self._key(name), rdtype.upper()), []).extend(rdata)
        return self

    def add_mx(self, domain: str, exchanges: list[tuple[int, str]]) -> DnsServer:
        return self.add(domain, "MX", *(f"{pref} {self._key(host)}" for pref, host in exchanges))

    def add_null_mx(self, domain: str) -> DnsServer:
        return self.add(domain, "MX", "0 .")

    def add_a(self, name: str, *addresses: str) -> DnsServer:
        return self.add(name, "A", *addresses)

    def add_aaaa(self, name: str, *addresses: str) -> DnsServer:
        return self.add(name, "AAAA", *addresses)

    def add_txt(self, name: str, *values: str) -> DnsServer:
        """One TXT record per value, each split into strings of at most 255 characters as a
        zone file would (a DKIM key is longer)."""
        return self.add(name, "TXT", *(_txt_rdata(value) for value in values))

    def add_spf(self, domain: str, record: str = "v=spf1 ip4:127.0.0.1 -all") -> DnsServer:
        return self.add_txt(domain, record)

    def add_dkim(self, domain: str, selector: str, public_key: str) -> DnsServer:
        """The key record of `selector` on `domain`: `public_key` is the base64 p= value."""
        return self.add_txt(f"{selector}._domainkey.{domain}", f"v=DKIM1; k=rsa; p={public_key}")

    def add_dmarc(self, domain: str, record: str = "v=DMARC1; p=reject") -> DnsServer:
        return self.add_txt(f"_dmarc.{domain}", record)

    def route(self, domain: str, address: str = "127.0.0.1") -> DnsServer:
        """The usual case: `domain` has one MX, mx.<domain>, at `address`."""
        return self.add_mx(domain, [(10, f"mx.{domain}")]).add_a(f"mx.{domain}", address)

    def clear(self) -> None:
        self.records.clear()
        self.timeouts.clear()
        self.servfail.clear()

    def start(self) -> DnsServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        self._sock.settimeout(0.1)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self._sock = self._thread = None

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                response = self._answer(dns.message.from_wire(wire))
            except Exception:  # a malformed query gets no answer, as from a real server
                continue
            if response is not None:
                with contextlib.suppress(OSError):
                    self._sock.sendto(response.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name.rstrip("."), rdtype))
        if name.rstrip(".") in self.timeouts:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name.rstrip(".") in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        rdata = self.records.get((name, rdtype))
        if rdata:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 0, dns.rdataclass.IN, rdtype, rdata)
            )
        elif not any(key_name == name for key_name, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response


def dkim_signatures(data: bytes, dns_server: DnsServer) -> list[tuple[str, bool]]:
    """Each DKIM-Signature of a message, topmost first: its d= domain and whether it verifies
    as a receiver would check it (dkimpy, keys looked up on `dns_server`)."""
    import dkim
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server.host]
    resolver.port = dns_server.port

    def txt(name: bytes, timeout: int = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode().rstrip("."), "TXT", lifetime=2)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(b"".join(record.strings) for record in answer)

    header = data.split(b"\r\n\r\n", 1)[0]
    count = sum(1 for line in header.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
    verifier = dkim.DKIM(data)
    results = []
    for index in range(count):
        verifier.signature_fields = {}
        try:
            ok = verifier.verify(idx=index, dnsfunc=txt)
        except dkim.DKIMException:
            ok = False
        results.append((verifier.signature_fields.get(b"d", b"").decode(), bool(ok)))
    return results


def _txt_rdata(value: str) -> str:
    chunks = [value[i : i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    peer: str
    connection: int  # the same number for messages that came over one SMTP connection


@functools.cache
def self_signed_context() -> ssl.SSLContext:
    """A server TLS context with a throwaway self-signed certificate (made once per process
    with the openssl command)."""
    directory = tempfile.mkdtemp(prefix="test-tls-")
    key, cert = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=mx.test", "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


class SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.sink.pipelining:  # aiosmtpd reads pipelined commands in turn; it only says so
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.sink.rcpt_seen.append(address)
        if self.sink.rcpt_delay:
            await asyncio.sleep(self.sink.rcpt_delay)
        reply = self.sink.reply_to_rcpt.get(address.lower())
        if isinstance(reply, list):  # replies for the next RCPTs, then the usual 250
            reply = reply.pop(0) if reply else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.sink.reply_to_data:
            return self.sink.reply_to_data
        self.sink.received.append(
            Received(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content or envelope.content,
                # STARTTLS, or TLS from the first byte (implicit TLS, port 465).
                tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                peer=str(session.peer[0]),
                connection=id(session),
            )
        )
        return f"250 2.0.0 OK queued as {len(self.sink.received)}"


class SmtpSink:
    """An aiosmtpd server that keeps what it receives. `reply_to_rcpt` maps a recipient to the
    reply RCPT gets ("550 5.1.1 No such user", "450 4.2.0 Try later"), or to a list of the
    replies its next RCPTs get (then 250); `reply_to_data`, when
    set, is DATA's reply for every message; `rcpt_delay` holds every RCPT reply back;
    `starttls` offers STARTTLS with a self-signed certificate; `pipelining` offers PIPELINING
    (RFC 2920)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, starttls: bool = False):
        self.host = host
        self.port = port or free_port(host)
        self.starttls = starttls
        self.received: list[Received] = []
        self.reply_to_rcpt: dict[str, str | list[str]] = {}
        self.reply_to_data: str | None = None
        self.rcpt_seen: list[str] = []  # every RCPT TO, answered or not
        self.rcpt_delay = 0.0  # seconds to wait before answering RCPT (a slow server)
        self.pipelining = False
        self.controller: Controller | None = None

    def start(self) -> SmtpSink:
        kwargs = {"tls_context": self_signed_context()} if self.starttls else {}
        self.controller = Controller(
            SinkHandler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="mx.test",
            ready_timeout=10,
            data_size_limit=None,
            **kwargs,
        )
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def recipients(self) -> list[str]:
        return [rcpt for received in self.received for rcpt in received.rcpt_tos]


class SilentServer:
    """A TCP port that accepts connections and never says a word: an MX that times out."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._sock: socket.socket | None = None

    def start(self) -> SilentServer:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((self.host, self.port))
        self.port = self._sock.getsockname()[1]
        self._sock.listen(16)
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SmtpRelay(SmtpSink):
    """An SMTP relay (a submission server): a sink that may require AUTH (`logins` maps a user
    name to its password; AUTH PLAIN and LOGIN, only once TLS is up) and STARTTLS before
    anything else, with its own self-signed certificate for "localhost" and 127.0.0.1
    (`certificate`, the CA file a client verifies it with)."""

    def __init__(
        self,
        *,
        starttls: bool = True,
        implicit_tls: bool = False,
        logins: dict[str, str] | None = None,
    ) -> None:
        super().__init__(starttls=starttls)
        self.implicit_tls = implicit_tls  # TLS from the first byte (port 465), no STARTTLS
        self.logins = logins or {}
        self.certificate = ""
        self.auth_attempts: list[str] = []

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.auth_attempts.append(login)
        return AuthResult(success=self.logins.get(login) == password, handled=False)

    def start(self) -> SmtpRelay:
        kwargs: dict = {}
        if self.starttls or self.implicit_tls:
            directory = tempfile.mkdtemp(prefix="test-relay-")
            key = os.path.join(directory, "key.pem")
            self.certificate = os.path.join(directory, "cert.pem")
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
                + ["-subj", "/CN=localhost", "-keyout", key, "-out", self.certificate]
                + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                check=True,
                capture_output=True,
                timeout=60,
            )
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.certificate, key)
            if self.implicit_tls:
                kwargs |= {"ssl_context": context}
            else:
                kwargs |= {"tls_context": context, "require_starttls": True}
        if self.logins:
            kwargs |= {
                "authenticator": self._authenticate,
                "auth_required": True,
                "auth_require_tls": self.starttls and not self.implicit_tls,
            }
        self.controller = Controller(
            SinkHandler(self),
            hostname=self.host,
            port=self.port,
            server_hostname="localhost",
            ready_timeout=10,
            data_size_limit=None,
            **kwargs,
        )
        self.controller.start()
        return self


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.mailservers`: a DNS server and an SMTP sink for trying delivery by hand.

    Every --domain gets an MX on 127.0.0.1 (the sink); --null-mx domains get a null MX; any
    other name is NXDOMAIN. --reply "rcpt=550 5.1.1 No such user" makes the sink refuse a
    recipient. Point the worker at them with DNS_NAMESERVERS=127.0.0.1:<dns port> and
    SMTP_DELIVERY_PORT=<smtp port>. Ctrl-C stops both.
    """
    import argparse
    import signal

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    parser.add_argument("--dns-port", type=int, default=20053)
    parser.add_argument("--smtp-port", type=int, default=20025)
    parser.add_argument("--domain", action="append", default=[])
    parser.add_argument("--null-mx", action="append", default=[])
    parser.add_argument("--reply", action="append", default=[], metavar="RCPT=REPLY")
    parser.add_argument("--starttls", action="store_true")
    args = parser.parse_args(argv)

    # Blocked in every thread (the servers' threads inherit it); the main thread waits for them.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    dns = DnsServer(port=args.dns_port).start()
    for domain in args.domain or ["example.net"]:
        dns.route(domain)
    for domain in args.null_mx:
        dns.add_null_mx(domain)
    sink = SmtpSink(port=args.smtp_port, starttls=args.starttls)
    for rule in args.reply:
        rcpt, _, reply = rule.partition("=")
        sink.reply_to_rcpt[rcpt.lower()] = reply
    sink.start()
    print(f"DNS on 127.0.0.1:{dns.port} (MX for {', '.join(args.domain or ['example.net'])}),")
    print(f"SMTP sink on 127.0.0.1:{sink.port}. Ctrl-C to stop.", flush=True)
    seen = 0
    try:
        while signal.sigtimedwait({signal.SIGINT, signal.SIGTERM}, 0.5) is None:
            for received in sink.received[seen:]:
                print(
                    f"received from {received.mail_from} for {', '.join(received.rcpt_tos)}: "
                    f"{len(received.data)} bytes{' over TLS' if received.tls else ''}",
                    flush=True,
                )
            seen = len(sink.received)
    finally:
        sink.stop()
        dns.stop()


if __name__ == "__main__":
    main()
