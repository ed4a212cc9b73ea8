"""Delivery's outcomes through the delivery loop's turns (tests/worker.py: its claims, in this
thread), against the local DNS server and SMTP sink. The loop itself, in a real qcluster, is
tests/tracking/test_worker_end_to_end.py."""

from __future__ import annotations

import email
from datetime import timedelta
from email.policy import default as default_policy

import pytest
import time_machine
from django.utils import timezone

from tests.factories import MessageFactory
from tests.mailservers import SilentServer, SmtpSink, self_signed_context
from tests.worker import deliver_due
from tracking.delivery.claims import messages_claim
from tracking.delivery.verp import verp_address, verp_message_id
from tracking.models import DeliveryAttempt, Disposition, Message

pytestmark = pytest.mark.django_db


def make_message(**fields) -> Message:
    recipient = fields.setdefault("recipient_address", "bob@example.net")
    fields.setdefault("recipient_domain", recipient.rpartition("@")[2])
    message = MessageFactory(**fields)
    message.smtp_message_id = f"<{message.message_id.hex}@iovox.email>"
    message.save(update_fields=["smtp_message_id"])
    return message


def deliver(message: Message) -> Message:
    deliver_due()
    message.refresh_from_db()
    return message


def test_2xx_makes_the_message_sent_over_starttls_with_a_verp_return_path(mail_servers, settings):
    tls_sink = SmtpSink(starttls=True).start()
    try:
        settings.SMTP_DELIVERY_PORT = tls_sink.port
        message = deliver(make_message())
    finally:
        tls_sink.stop()
    assert message.disposition == Disposition.SENT
    assert message.delivery_date is not None and message.locked_until is None
    assert message.last_smtp_response.startswith("250 ")
    [received] = tls_sink.received
    assert received.tls is True
    assert received.rcpt_tos == ["bob@example.net"]
    assert received.mail_from == verp_address(message)
    assert verp_message_id(received.mail_from) == message.message_id
    [attempt] = message.attempts.all()
    assert (attempt.mx_host, attempt.smtp_code, attempt.outcome) == ("mx.example.net", 250, "sent")


def test_starttls_names_the_mx_host(mail_servers, settings):
    """SNI carries the MX host's name though delivery connects to its address (smtp.py
    smtp_client_for: the one use of a private smtplib attribute, checked here on upgrade)."""
    names: list[str | None] = []
    context = self_signed_context()
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    tls_sink = SmtpSink(starttls=True).start()
    try:
        settings.SMTP_DELIVERY_PORT = tls_sink.port
        assert deliver(make_message()).disposition == Disposition.SENT
    finally:
        context.sni_callback = None
        tls_sink.stop()
    assert tls_sink.received[0].tls is True
    assert names == ["mx.example.net"]


def test_plain_smtp_is_used_when_starttls_is_not_offered(mail_servers):
    assert deliver(make_message()).disposition == Disposition.SENT
    assert mail_servers.mx.received[0].tls is False


def test_5xx_at_rcpt_makes_the_message_undeliverable(mail_servers):
    mail_servers.mx.reply_to_rcpt["gone@example.net"] = "550 5.1.1 No such user"
    message = deliver(make_message(recipient_address="gone@example.net"))
    assert message.disposition == Disposition.UNDELIVERABLE
    assert message.last_smtp_response == "550 5.1.1 No such user"
    assert message.delivery_date is None and message.next_attempt_at is None
    assert mail_servers.mx.received == []


def test_5xx_at_data_makes_the_message_undeliverable(mail_servers):
    mail_servers.mx.reply_to_data = "554 5.7.1 Message rejected as spam"
    message = deliver(make_message())
    assert message.disposition == Disposition.UNDELIVERABLE
    assert message.attempts.get().smtp_code == 554


def test_4xx_queues_then_the_retry_succeeds(mail_servers, settings):
    settings.EMAIL_RETRY_SCHEDULE = [60, 300]
    mail_servers.mx.reply_to_rcpt["busy@example.net"] = "451 4.3.0 Try again later"
    start = timezone.now()
    message = deliver(make_message(recipient_address="busy@example.net"))
    assert message.disposition == Disposition.QUEUED
    assert message.attempt_count == 1
    assert timedelta(seconds=59) < message.next_attempt_at - start < timedelta(seconds=65)
    assert deliver_due() == 0  # not due yet

    del mail_servers.mx.reply_to_rcpt["busy@example.net"]
    with time_machine.travel(start + timedelta(seconds=61)):
        assert deliver_due() == 1
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert [a.outcome for a in message.attempts.all()] == ["queued", "sent"]
    assert len(mail_servers.mx.received) == 1


def test_retry_delays_follow_the_schedule_and_the_last_repeats(mail_servers, settings):
    settings.EMAIL_RETRY_SCHEDULE = [60, 300]
    mail_servers.mx.reply_to_rcpt["busy@example.net"] = "421 4.7.0 Busy"
    message = make_message(recipient_address="busy@example.net")
    start = timezone.now()
    delays = []
    for hop in range(3):
        with time_machine.travel(start + timedelta(hours=hop), tick=False):
            message = deliver(message)
            delays.append((message.next_attempt_at - timezone.now()).total_seconds())
    assert delays == [60, 300, 300]
    assert message.attempt_count == 3


def test_refused_connection_queues(mail_servers, settings):
    settings.SMTP_DELIVERY_PORT = SilentServer().start().port  # bound, then closed below
    mail_servers.dns.clear()
    mail_servers.dns.route("example.net", "127.0.0.3")  # nothing listens there
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "refused" in message.last_smtp_response


def test_an_mx_that_never_answers_times_out_and_queues(mail_servers, settings):
    silent = SilentServer("127.0.0.4", mail_servers.mx.port).start()
    try:
        mail_servers.dns.clear()
        mail_servers.dns.route("example.net", "127.0.0.4")
        settings.SMTP_TIMEOUT = 0.3
        message = deliver(make_message())
    finally:
        silent.stop()
    assert message.disposition == Disposition.QUEUED
    assert "timed out" in message.last_smtp_response


def test_dns_timeout_queues(mail_servers, settings):
    settings.DNS_TIMEOUT = 0.2
    mail_servers.dns.timeouts.add("example.net")
    message = deliver(make_message())
    assert message.disposition == Disposition.QUEUED
    assert "MX lookup" in message.last_smtp_response
    assert mail_servers.mx.received == []


def test_dns_servfail_queues(mail_servers):
    mail_servers.dns.servfail.add("example.net")
    assert deliver(make_message()).disposition == Disposition.QUEUED


def test_nxdomain_gives_no_mx_record(mail_servers):
    message = deliver(make_message(recipient_address="bob@nowhere.example"))
    assert message.disposition == Disposition.NO_MX_RECORD
    assert "NXDOMAIN" in message.last_smtp_response
    assert message.attempts.get().outcome == "noMxRecord"


def test_null_mx_gives_no_mx_record(mail_servers):
    mail_servers.dns.add_null_mx("nomail.example")
    message = deliver(make_message(recipient_address="bob@nomail.example"))
    assert message.disposition == Disposition.NO_MX_RECORD
    assert "null MX" in message.last_smtp_response


def test_without_mx_the_domain_itself_is_the_mx(mail_servers):
    mail_servers.dns.add_a("implicit.example", "127.0.0.1")
    message = deliver(make_message(recipient_address="bob@implicit.example"))
    assert message.disposition == Disposition.SENT
    assert message.attempts.get().mx_host == "implicit.example"
    assert ("implicit.example", "MX") in mail_servers.dns.queries


def test_without_mx_or_address_there_is_no_mx_record(mail_servers):
    mail_servers.dns.add("txtonly.example", "TXT", '"v=spf1 -all"')
    message = deliver(make_message(recipient_address="bob@txtonly.example"))
    assert message.disposition == Disposition.NO_MX_RECORD


def test_mx_hosts_are_tried_by_preference(mail_servers):
    mail_servers.dns.clear()
    mail_servers.dns.add_mx(
        "example.net", [(20, "backup.example.net"), (5, "down.example.net")]
    ).add_a("down.example.net", "127.0.0.5").add_a("backup.example.net", "127.0.0.1")
    message = deliver(make_message())
    assert message.disposition == Disposition.SENT
    [attempt] = message.attempts.all()
    assert attempt.mx_host == "backup.example.net"
    down = mail_servers.dns.queries.index(("down.example.net", "A"))
    assert down < mail_servers.dns.queries.index(("backup.example.net", "A"))


def test_queued_message_expires_at_email_expiry(mail_servers, settings):
    settings.EMAIL_EXPIRY = 3600
    settings.EMAIL_RETRY_SCHEDULE = [1800]
    mail_servers.mx.reply_to_rcpt["busy@example.net"] = "450 4.2.1 Mailbox busy"
    message = make_message(recipient_address="busy@example.net")
    start = message.receive_date
    message = deliver(message)
    assert message.disposition == Disposition.QUEUED
    with time_machine.travel(start + timedelta(seconds=1801)):
        deliver_due()
    message.refresh_from_db()
    assert message.disposition == Disposition.QUEUED
    # The next retry would come after the deadline: the message waits for the deadline ...
    assert message.next_attempt_at == start + timedelta(seconds=3600)
    with time_machine.travel(start + timedelta(seconds=3599)):
        assert deliver_due() == 0
    # ... where it expires, without another attempt.
    with time_machine.travel(start + timedelta(seconds=3600)):
        assert deliver_due() == 0
    message.refresh_from_db()
    assert message.disposition == Disposition.EXPIRED
    assert message.status_detail == "expired: 450 4.2.1 Mailbox busy"
    assert [a.outcome for a in message.attempts.all()] == ["queued", "queued"]
    with time_machine.travel(start + timedelta(days=10)):
        assert deliver_due() == 0


def test_a_message_expires_at_its_deadline_though_an_attempt_is_in_flight(
    mail_servers, settings, caplog
):
    from tracking.delivery.deliver import Outcomes
    from tracking.delivery.smtp import SmtpReply

    settings.EMAIL_EXPIRY = 60
    message = make_message(
        disposition=Disposition.QUEUED, next_attempt_at=timezone.now(), attempt_count=3
    )
    [in_flight] = messages_claim(domain="example.net")  # a slow MX holds its attempt
    with time_machine.travel(message.receive_date + timedelta(seconds=60)):
        assert deliver_due() == 0
    message.refresh_from_db()
    assert message.disposition == Disposition.EXPIRED
    # The attempt ends after all: its outcome is not kept.
    outcomes = Outcomes()
    outcomes.add(in_flight, Disposition.SENT, SmtpReply(250, "2.0.0 OK", "mx.example.net"))
    outcomes.flush()
    message.refresh_from_db()
    assert message.disposition == Disposition.EXPIRED and not message.attempts.exists()
    assert "changed during delivery; sent not kept" in caplog.text


def test_messages_to_one_domain_share_one_connection(mail_servers):
    messages = [make_message(recipient_address=f"r{i}@example.net") for i in range(5)]
    assert deliver_due() == 1  # one batch
    assert sorted(mail_servers.mx.recipients()) == [f"r{i}@example.net" for i in range(5)]
    assert len({r.connection for r in mail_servers.mx.received}) == 1
    assert all(deliver(m).disposition == Disposition.SENT for m in messages)
    assert deliver_due() == 0
    assert len(mail_servers.mx.received) == 5


def test_domains_take_turns_so_a_backlog_delays_another_domain_by_one_batch(mail_servers, settings):
    settings.DELIVERY_BATCH_SIZE = 2
    mail_servers.dns.route("other.example")
    for i in range(6):
        make_message(recipient_address=f"r{i}@example.net")
    make_message(recipient_address="late@other.example")
    assert deliver_due() == 4
    batches = [received.rcpt_tos[0].partition("@")[2] for received in mail_servers.mx.received]
    assert batches.index("other.example") <= 2  # after the first batch of the backlog
    assert Message.objects.filter(disposition=Disposition.SENT).count() == 7


def test_mail_to_a_new_domain_goes_within_two_turns_however_many_domains_wait(
    mail_servers, settings
):
    from tests.worker import InThisThread
    from tracking.worker import Delivery

    for n in range(8):
        mail_servers.dns.route(f"d{n}.example")
        for i in range(2):
            make_message(recipient_address=f"r{i}@d{n}.example")
    delivery = Delivery(InThisThread())
    for _ in range(3):
        assert delivery.turn()
    mail_servers.dns.route("zz-late.example")
    late = make_message(recipient_address="late@zz-late.example")
    delivery.turn()
    delivery.turn()
    late.refresh_from_db()
    assert late.disposition == Disposition.SENT
    assert Message.objects.filter(disposition=Disposition.RECEIVED).count() >= 8


def test_a_retry_that_falls_due_goes_within_two_turns_however_much_waits(mail_servers, settings):
    from tests.worker import InThisThread
    from tracking.worker import Delivery

    for n in range(8):
        mail_servers.dns.route(f"d{n}.example")
        make_message(recipient_address=f"r@d{n}.example")
    retry = make_message(
        recipient_address="busy@example.net",
        disposition=Disposition.QUEUED,
        next_attempt_at=timezone.now() + timedelta(seconds=30),
    )
    delivery = Delivery(InThisThread())
    delivery.turn()
    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        delivery.turn()
        delivery.turn()
    retry.refresh_from_db()
    assert retry.disposition == Disposition.SENT
    assert Message.objects.filter(disposition=Disposition.RECEIVED).count() >= 5


def test_a_domain_using_half_the_connections_gives_way_unless_it_is_alone(mail_servers):
    from tests.worker import InThisThread
    from tracking.worker import Delivery

    class HalfBusyWithExampleNet(InThisThread):
        size = 4

        def busy_with(self, domain: str) -> int:
            return 2 if domain == "example.net" else 0

    make_message(recipient_address="a@example.net")
    delivery = Delivery(HalfBusyWithExampleNet())
    assert delivery.next_domain() == "example.net"  # the only one with due mail
    make_message(recipient_address="b@other.example")
    assert {delivery.next_domain(), delivery.next_domain()} == {"other.example"}


def test_one_refusal_in_a_batch_does_not_stop_the_others(mail_servers):
    mail_servers.mx.reply_to_rcpt["r1@example.net"] = "550 5.1.1 No such user"
    messages = [make_message(recipient_address=f"r{i}@example.net") for i in range(3)]
    assert [deliver(m).disposition for m in messages] == ["sent", "undeliverable", "sent"]


def test_delivering_twice_sends_once(mail_servers):
    message = make_message()
    deliver(message)
    deliver(message)
    assert len(mail_servers.mx.received) == 1
    assert DeliveryAttempt.objects.count() == 1


def test_a_claimed_message_is_not_delivered_by_another_worker(mail_servers, settings):
    message = make_message()
    [claimed] = messages_claim(domain="example.net")
    assert claimed.pk == message.pk
    assert deliver_due() == 0
    live = timezone.now() + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS - 1)
    with time_machine.travel(live):
        assert deliver_due() == 0
    assert mail_servers.mx.received == []


def test_a_claim_whose_worker_died_lapses_and_is_delivered_once(mail_servers, settings):
    message = make_message()
    messages_claim(domain="example.net")  # ... and the worker is killed here
    lapsed = timezone.now() + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS + 1)
    with time_machine.travel(lapsed):
        assert deliver_due() == 1
        assert deliver_due() == 0
    message.refresh_from_db()
    assert message.disposition == Disposition.SENT
    assert message.attempt_count == 2
    assert len(mail_servers.mx.received) == 1


def test_a_live_claim_is_renewed_and_does_not_lapse(mail_servers, settings):
    from tracking.delivery.claims import claims_renew

    make_message()
    batch = messages_claim(domain="example.net")
    later = timezone.now() + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS - 1)
    with time_machine.travel(later):
        assert claims_renew(batch) == 1
    with time_machine.travel(later + timedelta(seconds=2)):
        assert deliver_due() == 0  # the renewed lock still holds
    assert mail_servers.mx.received == []


def test_the_lapsed_workers_late_result_does_not_overwrite(mail_servers, settings):
    from tracking.delivery.state import Transition, messages_transition

    make_message()
    [stale] = messages_claim(domain="example.net")
    lapsed = timezone.now() + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS + 1)
    with time_machine.travel(lapsed):
        [fresh] = messages_claim(domain="example.net")  # another worker takes it over
    # The first worker's outcome comes in while the second's attempt is going on.
    assert messages_transition([Transition(stale, Disposition.QUEUED, claimed=True)]) == [False]
    assert messages_transition([Transition(fresh, Disposition.SENT, claimed=True)]) == [True]
    assert Message.objects.get().disposition == Disposition.SENT


def test_a_claim_does_not_change_the_version_a_transition_checks(mail_servers):
    """A writer that read the message before a worker claimed it moves it at the first try."""
    from tracking.delivery.state import message_transition

    message = make_message()
    messages_claim(domain="example.net")
    assert message_transition(message=message, to=Disposition.NO_RULES, status_detail="x")
    assert Message.objects.get().disposition == Disposition.NO_RULES


def test_forwarded_mail_sends_its_source_bytes(mail_servers):
    source = (
        b"From: Someone <someone@elsewhere.example>\r\nTo: bob@example.net\r\n"
        b"Subject: fwd\r\nMessage-ID: <orig@elsewhere.example>\r\n\r\nbody\r\n"
    )
    message = deliver(make_message(source_mime=source, direction="alias"))
    assert message.disposition == Disposition.SENT
    [received] = mail_servers.mx.received
    assert received.data.replace(b"\r\n", b"\n") == source.replace(b"\r\n", b"\n")
    assert received.mail_from == verp_address(message)


def test_the_schedules_exist_after_migrate_with_no_manual_step(db):
    """The test database was made by `migrate`, and nothing else made them."""
    from django_q.models import Schedule

    schedules = {s.name: (s.func, s.minutes) for s in Schedule.objects.all()}
    assert schedules == {
        "iovox:delivery-loop": ("tracking.tasks.delivery_loop", 1),
        "iovox:routing-loop": ("conversations.tasks.routing_loop", 1),
        "iovox:webhooks-loop": ("tracking.tasks.webhook_loop", 1),
        "iovox:purge": ("conversations.tasks.purge", 10),
        "iovox:domain-checks": ("conversations.tasks.check_domains", 60),
    }


def test_the_schedules_follow_the_code(db):
    from django_q.models import Schedule

    from tracking.schedules import schedules_sync

    Schedule.objects.filter(name="iovox:delivery-loop").update(minutes=30, func="gone.task")
    Schedule.objects.create(name="iovox:no-longer-declared", func="gone.task")
    schedules_sync()
    assert not Schedule.objects.filter(name="iovox:no-longer-declared").exists()
    loop = Schedule.objects.get(name="iovox:delivery-loop")
    assert (loop.func, loop.minutes) == ("tracking.tasks.delivery_loop", 1)
    assert Schedule.objects.filter(name__startswith="iovox:").count() == 5


def test_the_sent_mime_parses_back(mail_servers):
    deliver(make_message(subject="Grüße", sender_name="Zoë"))
    parsed = email.message_from_bytes(mail_servers.mx.received[0].data, policy=default_policy)
    assert parsed["Subject"] == "Grüße"
    assert parsed["From"].addresses[0].display_name == "Zoë"


def test_a_message_that_cannot_be_built_is_undeliverable_and_the_batch_goes_on(mail_servers):
    broken = make_message(recipient_address="a@example.net", headers={"X-Count": 5})
    fine = make_message(recipient_address="b@example.net")
    deliver_due()
    broken.refresh_from_db()
    fine.refresh_from_db()
    assert fine.disposition == Disposition.SENT
    assert broken.disposition == Disposition.UNDELIVERABLE
    assert broken.last_smtp_response.startswith("could not build the message")
    assert mail_servers.mx.recipients() == ["b@example.net"]


# --- PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write where the server offers it -----


@pytest.fixture
def pipelined_writes(mail_servers, monkeypatch) -> list[bytes]:
    """The MX offers PIPELINING; every write of the delivering client, watched."""
    import smtplib

    mail_servers.mx.pipelining = True
    writes: list[bytes] = []
    send = smtplib.SMTP.send

    def watched(self, s):
        writes.append(s.encode("ascii") if isinstance(s, str) else s)
        return send(self, s)

    monkeypatch.setattr(smtplib.SMTP, "send", watched)
    return writes


def test_with_pipelining_mail_rcpt_and_data_go_out_in_one_write(mail_servers, pipelined_writes):
    messages = [make_message(recipient_address=f"r{i}@example.net") for i in range(3)]
    assert [deliver(m).disposition for m in messages] == ["sent"] * 3
    together = [w for w in pipelined_writes if w.startswith(b"MAIL FROM:")]
    assert len(together) == 3
    assert all(b"\r\nRCPT TO:<" in w and w.endswith(b"\r\nDATA\r\n") for w in together)
    assert not any(w.startswith((b"RCPT", b"DATA")) for w in pipelined_writes)
    received = mail_servers.mx.received
    assert [r.rcpt_tos for r in received] == [[f"r{i}@example.net"] for i in range(3)]
    assert all(email.message_from_bytes(r.data)["Message-ID"] for r in received)


def test_with_pipelining_a_refused_recipient_ends_its_message_alone(mail_servers, pipelined_writes):
    mail_servers.mx.reply_to_rcpt["r1@example.net"] = "550 5.1.1 No such user"
    mail_servers.mx.reply_to_rcpt["r2@example.net"] = "450 4.2.0 Mailbox busy"
    messages = [make_message(recipient_address=f"r{i}@example.net") for i in range(4)]
    messages = [deliver(m) for m in messages]
    assert [m.disposition for m in messages] == ["sent", "undeliverable", "queued", "sent"]
    assert messages[1].last_smtp_response == "550 5.1.1 No such user"
    assert messages[2].last_smtp_response == "450 4.2.0 Mailbox busy"
    assert mail_servers.mx.recipients() == ["r0@example.net", "r3@example.net"]


def test_with_pipelining_a_refused_data_makes_the_message_undeliverable(
    mail_servers, pipelined_writes
):
    mail_servers.mx.reply_to_data = "554 5.7.1 Message rejected as spam"
    message = deliver(make_message())
    assert message.disposition == Disposition.UNDELIVERABLE
    assert message.attempts.get().smtp_code == 554


def test_a_line_starting_with_a_dot_arrives_as_it_was_sent(mail_servers, pipelined_writes):
    body = "first line\r\n.a line that starts with a dot\r\n..two dots\r\n."
    message = deliver(make_message(text_content=body, html_content=""))
    assert message.disposition == Disposition.SENT
    [received] = mail_servers.mx.received
    text = email.message_from_bytes(received.data, policy=default_policy).get_content()
    assert text.replace("\r\n", "\n").rstrip("\n") == body.replace("\r\n", "\n")


def test_with_pipelining_data_taken_after_a_refused_recipient_is_ended_empty(
    mail_servers, settings
):
    """RFC 2920 section 3.1: a server may answer DATA with 354 though it refused the only
    recipient; the client then ends the message at once with the lone dot."""
    import socket
    import threading

    seen: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    settings.SMTP_DELIVERY_PORT = listener.getsockname()[1]

    def scripted() -> None:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as lines:
            connection.sendall(b"220 scripted ESMTP\r\n")
            for _ in range(20):  # bounded: the client's lines, in order
                line = lines.readline()
                seen.append(line)
                if not line:
                    return
                command = line.upper()
                if command.startswith(b"EHLO"):
                    connection.sendall(b"250-scripted\r\n250 PIPELINING\r\n")
                elif command.startswith(b"DATA"):
                    connection.sendall(b"250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n354 Go on\r\n")
                elif line == b".\r\n":
                    connection.sendall(b"554 5.5.1 No valid recipients\r\n")
                elif command.startswith(b"RSET"):
                    connection.sendall(b"250 2.0.0 Ok\r\n")
                elif command.startswith(b"QUIT"):
                    connection.sendall(b"221 Bye\r\n")

    server = threading.Thread(target=scripted, daemon=True)
    server.start()
    try:
        message = deliver(make_message())
    finally:
        server.join(5)
        listener.close()
    assert message.disposition == Disposition.UNDELIVERABLE
    assert message.last_smtp_response == "550 5.1.1 No such user"
    data_at = seen.index(b"DATA\r\n")
    assert [line.upper() for line in seen[data_at + 1 : data_at + 3]] == [b".\r\n", b"RSET\r\n"]
