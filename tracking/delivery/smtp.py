"""One SMTP connection to one MX address, carrying as many messages as it is given.

Where the server offers PIPELINING (RFC 2920; Postfix, Exim and the big providers do), MAIL,
RCPT and DATA go out together: two round trips a message instead of four.

STARTTLS is used whenever the server offers it. Certificates are not verified: this is
opportunistic TLS (RFC 7435), which protects against passive listening, and MX servers with
self-signed certificates are common; refusing them would only push mail back to plain text.

`RelayConnection` is the same connection to the SMTP relay of DELIVERY_TRANSPORT=smtp, where
TLS is required and verified and we log in (docs/transports.md).
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class SmtpReply:
    code: int | None  # None: no reply at all (refused, timed out, dropped)
    text: str
    host: str

    @property
    def accepted(self) -> bool:
        return self.code is not None and 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code is not None and 500 <= self.code < 600

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code is not None else self.text


def _tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _text(message: bytes | str) -> str:
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return " ".join(message.split())[:1000]


def smtp_client_for(host: str) -> smtplib.SMTP:
    """An unconnected SMTP client whose STARTTLS names `host` (SNI), though it is then
    connected to one of the host's addresses. smtplib takes that name from the host given to
    its constructor, which would also connect by name (our own MX lookup picks the address);
    it has no public way to set the name alone, so this sets the attribute smtplib keeps it
    in. The one private use: test_starttls_names_the_mx_host fails if an upgrade breaks it."""
    smtp = smtplib.SMTP(local_hostname=settings.SMTP_HELO_NAME, timeout=settings.SMTP_TIMEOUT)
    smtp._host = host
    return smtp


class MxConnection:
    """Use as a context manager; `open()` returns None on success or the failing reply."""

    def __init__(self, host: str, address: str) -> None:
        self.host = host
        self.address = address
        self.smtp: smtplib.SMTP | None = None
        self.port = settings.SMTP_DELIVERY_PORT
        self.tls = False
        self.pipelining = False

    def __enter__(self) -> MxConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> SmtpReply | None:
        smtp = smtp_client_for(self.host)
        try:
            code, text = smtp.connect(self.address, self.port)
            if code != 220:
                smtp.close()
                return SmtpReply(code, _text(text), self.host)
            code, text = smtp.ehlo()
            if code != 250:
                code, text = smtp.helo()
                if code != 250:
                    smtp.close()
                    return SmtpReply(code, _text(text), self.host)
            if smtp.has_extn("starttls"):
                code, text = smtp.starttls(context=_tls_context())
                self.tls = code == 220
                smtp.ehlo()
        except (OSError, smtplib.SMTPException) as e:
            smtp.close()
            return SmtpReply(None, _describe(e, self), self.host)
        self.smtp = smtp
        self.pipelining = smtp.has_extn("pipelining")
        return None

    @property
    def alive(self) -> bool:
        return self.smtp is not None

    def send(self, *, mail_from: str, rcpt_to: str, data: bytes) -> SmtpReply:
        """One MAIL/RCPT/DATA transaction. The connection stays usable after a refusal (it is
        reset); after a network failure it is closed and `alive` is False."""
        assert self.smtp is not None
        smtp = self.smtp
        try:
            if self.pipelining:
                return self._send_pipelined(smtp, mail_from, rcpt_to, data)
            # smtplib's mail() and rcpt() run each address through email.utils.parseaddr (a
            # sixth of a delivery's CPU) to quote it; ours are plain ASCII addresses, checked
            # when accepted, so they are quoted as they are (putcmd still refuses CR and LF).
            code, text = smtp.docmd("MAIL", f"FROM:<{mail_from}>")
            if code == 250:
                code, text = smtp.docmd("RCPT", f"TO:<{rcpt_to}>")
                if code in (250, 251):
                    code, text = smtp.data(data)
                    return SmtpReply(code, _text(text), self.host)
            smtp.rset()
            return SmtpReply(code, _text(text), self.host)
        except smtplib.SMTPResponseException as e:
            # A refusal of DATA itself (not 354): the session is still in step.
            reply = SmtpReply(e.smtp_code, _text(e.smtp_error), self.host)
            try:
                smtp.rset()
            except (OSError, smtplib.SMTPException):
                self.close()
            return reply
        except (OSError, smtplib.SMTPException) as e:
            self.close()
            return SmtpReply(None, _describe(e, self), self.host)

    def _send_pipelined(
        self, smtp: smtplib.SMTP, mail_from: str, rcpt_to: str, data: bytes
    ) -> SmtpReply:
        """MAIL, RCPT and DATA in one write, their three replies read in order; the message
        follows if all three were accepted. The first refusal is the answer."""
        if _NEWLINE.search(mail_from + rcpt_to):
            raise ValueError("an address with a line break cannot go into an SMTP command")
        smtp.send(f"MAIL FROM:<{mail_from}>\r\nRCPT TO:<{rcpt_to}>\r\nDATA\r\n")
        replies = [smtp.getreply() for _ in range(3)]
        (mail_code, _), (rcpt_code, _), (data_code, _) = replies
        accepted = mail_code == 250 and rcpt_code in (250, 251)
        if data_code == 354:
            # A server may take DATA though it refused the recipient (RFC 2920 section 3.1):
            # the message is then ended at once, empty, and that is refused too.
            smtp.send(_dot_stuffed(data) if accepted else b".\r\n")
            final = smtp.getreply()
            if accepted:
                return SmtpReply(final[0], _text(final[1]), self.host)
        if mail_code != 250:
            code, text = replies[0]
        elif rcpt_code not in (250, 251):
            code, text = replies[1]
        else:
            code, text = replies[2]  # DATA itself refused
        smtp.rset()
        return SmtpReply(code, _text(text), self.host)

    def close(self) -> None:
        if self.smtp is None:
            return
        smtp, self.smtp = self.smtp, None
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


_NEWLINE = re.compile(r"[\r\n]")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(data: bytes) -> bytes:
    """The message as DATA carries it: a line that starts with "." gets another (RFC 5321
    section 4.5.2), and the lone "." line ends it."""
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _describe(error: BaseException, connection: MxConnection) -> str:
    where = f"{connection.address}:{connection.port}"
    if isinstance(error, socket.timeout | TimeoutError) or "timed out" in str(error):
        return f"timed out talking to {where}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where}"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the certificate of {where} failed verification: {error.verify_message}"
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return f"{where} closed the connection"
    return f"{type(error).__name__} talking to {where}: {error}"


def relay_tls_context() -> ssl.SSLContext:
    """The relay's certificate is verified (against SMTP_RELAY_CA_FILE, or the system's CAs)
    unless SMTP_RELAY_VERIFY is off: it holds our credentials and every message."""
    context = ssl.create_default_context(cafile=settings.SMTP_RELAY_CA_FILE or None)
    if not settings.SMTP_RELAY_VERIFY:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class RelayConnection(MxConnection):
    """A connection to SMTP_RELAY_HOST: implicit TLS, STARTTLS (required) or plain, as
    SMTP_RELAY_SECURITY says, then AUTH when SMTP_RELAY_USERNAME is set. A failure to open
    the session is never the message's fault, so its reply carries no code: the messages stay
    `queued` (a 5xx greeting or a refused login is a matter of our configuration)."""

    def __init__(self) -> None:
        super().__init__(settings.SMTP_RELAY_HOST, settings.SMTP_RELAY_HOST)
        self.port = settings.SMTP_RELAY_PORT

    def open(self) -> SmtpReply | None:
        security = settings.SMTP_RELAY_SECURITY
        context = relay_tls_context()
        smtp = None
        try:
            # Connecting in the constructor makes it the name TLS verifies (SNI too).
            options = {"local_hostname": settings.SMTP_HELO_NAME, "timeout": settings.SMTP_TIMEOUT}
            if security == "tls":
                smtp = smtplib.SMTP_SSL(self.host, self.port, context=context, **options)
            else:
                smtp = smtplib.SMTP(self.host, self.port, **options)
            refused = self._session(smtp, security, context)
        except smtplib.SMTPConnectError as e:
            refused = f"the relay greeted with {e.smtp_code} {_text(e.smtp_error)}"
        except smtplib.SMTPAuthenticationError as e:
            refused = f"the relay refused our credentials: {e.smtp_code} {_text(e.smtp_error)}"
        except (OSError, smtplib.SMTPException) as e:
            refused = _describe(e, self)
        if refused is not None:
            if smtp is not None:
                smtp.close()
            return SmtpReply(None, refused, self.host)
        self.smtp = smtp
        self.tls = security != "none"
        self.pipelining = smtp.has_extn("pipelining")
        return None

    def _session(self, smtp: smtplib.SMTP, security: str, context: ssl.SSLContext) -> str | None:
        """EHLO, STARTTLS and AUTH after the greeting; what went wrong, or None."""
        code, text = smtp.ehlo()
        if code != 250:
            return f"the relay refused EHLO: {code} {_text(text)}"
        if security == "starttls":
            if not smtp.has_extn("starttls"):
                return "the relay does not offer STARTTLS (SMTP_RELAY_SECURITY=starttls)"
            code, text = smtp.starttls(context=context)
            if code != 220:
                return f"the relay refused STARTTLS: {code} {_text(text)}"
            smtp.ehlo()
        if settings.SMTP_RELAY_USERNAME:
            smtp.login(settings.SMTP_RELAY_USERNAME, settings.SMTP_RELAY_PASSWORD)
        return None

    def usable(self) -> bool:
        """Still open and answering (a relay closes idle connections): a NOOP."""
        if self.smtp is None:
            return False
        try:
            if self.smtp.noop()[0] == 250:
                return True
        except (OSError, smtplib.SMTPException):
            pass
        self.close()
        return False

    @staticmethod
    def configuration() -> tuple:
        """What a kept connection was opened with; one opened otherwise is not reused."""
        return (
            settings.SMTP_RELAY_HOST,
            settings.SMTP_RELAY_PORT,
            settings.SMTP_RELAY_SECURITY,
            settings.SMTP_RELAY_USERNAME,
            settings.SMTP_RELAY_PASSWORD,
        )
