"""`check_domains`: our domains' MX, SPF, DKIM and DMARC records as the loopback DNS server
serves them (good, missing, wrong, or no answer at all), through the command, the admin, the
scheduled task and the services behind them."""

from __future__ import annotations

import io
from html import unescape

import pytest
from django.core.management import CommandError, call_command

from conversations import tasks
from conversations.domains import domains_check, domains_to_check
from conversations.models import DomainCheck, ProxyDomain
from conversations.services import proxy_domain_add
from tests.factories import AccountFactory
from tracking.models import AliasDomain, DkimKey
from tracking.schedules import SCHEDULES
from tracking.services.dkim_keys import dkim_key_add

pytestmark = pytest.mark.django_db

RELAY = "relay.example"
INBOUND_HOST = "mx.iovox.test"
DMARC = '_dmarc.relay.example. IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r"'


@pytest.fixture
def dns(mail_servers, settings):
    """Our inbound server is mx.iovox.test and our mail leaves from 127.0.0.1."""
    settings.SMTPD_PUBLIC_HOST = INBOUND_HOST
    settings.SENDING_IPS = ["127.0.0.1"]
    settings.SPF_INCLUDE = ""
    return mail_servers.dns


@pytest.fixture
def relay(dns) -> DkimKey:
    """A proxy domain, and the key it got when it was added."""
    proxy_domain_add(domain=RELAY)
    return DkimKey.objects.get(domain=RELAY)


def publish_everything(dns, key: DkimKey, domain: str = RELAY) -> None:
    dns.add_mx(domain, [(10, INBOUND_HOST)])
    dns.add_spf(domain, "v=spf1 ip4:127.0.0.1 -all")
    dns.add(key.dns_name, "TXT", key.dns_txt_strings)
    dns.add_dmarc(domain, "v=DMARC1; p=reject")


def findings(row: DomainCheck, check: str) -> list[dict]:
    return [f for f in row.findings if f["check"] == check]


def test_a_domain_publishing_everything_is_ok_and_its_key_starts_signing(dns, relay):
    assert relay.status == DkimKey.Status.PENDING
    publish_everything(dns, relay)
    [row] = domains_check(domains=[RELAY])
    assert (row.kinds, row.mx, row.spf, row.dkim, row.dmarc) == ("proxy", "ok", "ok", "ok", "ok")
    assert findings(row, "mx")[0]["detail"] == f"MX {INBOUND_HOST}"
    assert findings(row, "spf")[0]["detail"] == "v=spf1 ip4:127.0.0.1 -all: passes for 127.0.0.1"
    assert findings(row, "dkim")[0]["detail"] == "published: this key signs from now on"
    assert findings(row, "dmarc")[0]["detail"] == "v=DMARC1; p=reject: p=reject"
    relay.refresh_from_db()
    assert relay.status == DkimKey.Status.ACTIVE


def test_missing_records_are_reported_with_the_exact_records_to_publish(dns, relay):
    [row] = domains_check(domains=[RELAY])
    assert (row.mx, row.spf, row.dkim, row.dmarc) == ("missing",) * 4
    records = {f["check"]: f["record"] for f in row.findings}
    assert records == {
        "mx": f"relay.example. IN MX 10 {INBOUND_HOST}.",
        "spf": 'relay.example. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
        "dkim": relay.dns_record,
        "dmarc": DMARC,
    }
    assert "A new key: it signs once this record is published" in findings(row, "dkim")[0]["detail"]
    relay.refresh_from_db()
    assert relay.status == DkimKey.Status.PENDING


def test_wrong_records_are_reported_as_wrong_with_what_was_found(dns, relay):
    other = dkim_key_add(domain="elsewhere.example")
    dns.add_mx(RELAY, [(10, INBOUND_HOST), (20, "backup.other.example")])
    dns.add_spf(RELAY, "v=spf1 ip4:192.0.2.1 -all")
    dns.add_dkim(RELAY, relay.selector, other.public_key)  # somebody else's key
    dns.add_dmarc(RELAY, "v=DMARC1; p=bogus")
    [row] = domains_check(domains=[RELAY])
    assert (row.mx, row.spf, row.dkim, row.dmarc) == ("wrong",) * 4
    details = {f["check"]: f["detail"] for f in row.findings}
    assert details["mx"] == "MX names backup.other.example: mail sent there does not reach us"
    assert details["spf"] == (
        "v=spf1 ip4:192.0.2.1 -all: fail for 127.0.0.1. Publish the record below, or, if other "
        "servers send for this domain too, add ip4:127.0.0.1 before the record's all."
    )
    assert details["dkim"].startswith("the TXT record there does not publish this key")
    assert details["dmarc"].startswith("'v=DMARC1; p=bogus' is not a valid DMARC record")
    assert findings(row, "dmarc")[0]["record"] == DMARC
    relay.refresh_from_db()
    assert relay.status == DkimKey.Status.PENDING  # a wrong record never makes a key sign


@pytest.mark.parametrize("failure", ["timeouts", "servfail"])
def test_a_dns_failure_is_could_not_check_never_ok(dns, relay, failure):
    publish_everything(dns, relay)
    names = {RELAY, relay.dns_name, f"_dmarc.{RELAY}"}
    getattr(dns, failure).update(names)
    [row] = domains_check(domains=[RELAY])
    assert (row.mx, row.spf, row.dkim, row.dmarc) == ("unknown",) * 4
    assert all("DNS did not answer" in f["detail"] for f in row.findings)
    assert row.get_dkim_display() == "could not check"
    relay.refresh_from_db()
    assert relay.status == DkimKey.Status.PENDING


def test_an_spf_include_that_times_out_is_could_not_check(dns, relay):
    dns.add_spf(RELAY, "v=spf1 include:_spf.slow.example -all")
    dns.timeouts.add("_spf.slow.example")
    [row] = domains_check(domains=[RELAY])
    assert row.spf == "unknown"
    assert "DNS did not answer while evaluating it" in findings(row, "spf")[0]["detail"]


def test_settings_that_are_not_given_make_checks_that_could_not_be_made(dns, relay, settings):
    settings.SMTPD_PUBLIC_HOST = ""
    settings.SENDING_IPS = []
    publish_everything(dns, relay)
    [row] = domains_check(domains=[RELAY])
    assert (row.mx, row.spf, row.dkim, row.dmarc) == ("unknown", "unknown", "ok", "ok")
    assert "SMTPD_PUBLIC_HOST" in findings(row, "mx")[0]["detail"]
    assert "SENDING_IPS" in findings(row, "spf")[0]["detail"]
    settings.SENDING_IPS = ["not-an-ip"]
    [row] = domains_check(domains=[RELAY])
    assert "SENDING_IPS holds 'not-an-ip'" in findings(row, "spf")[0]["detail"]


def test_spf_include_names_the_record_to_publish_and_is_checked_itself(dns, relay, settings):
    settings.SPF_INCLUDE = "_spf.iovox.test"
    dns.add_spf("_spf.iovox.test", "v=spf1 ip4:127.0.0.1 -all")
    dns.add_spf(RELAY, "v=spf1 include:_spf.iovox.test -all")
    rows = {row.domain: row for row in domains_check(domains=[RELAY, "_spf.iovox.test"])}
    assert rows[RELAY].spf == "ok"
    assert rows["_spf.iovox.test"].kinds == "spf"
    assert (rows["_spf.iovox.test"].spf, rows["_spf.iovox.test"].dkim) == ("ok", "")
    [row] = domains_check(domains=["iovox.email"])
    assert findings(row, "spf")[0]["record"] == (
        'iovox.email. IN TXT "v=spf1 include:_spf.iovox.test -all"'
    )


def test_a_dmarc_record_of_the_organizational_domain_applies(dns):
    proxy_domain_add(domain="relay.shop.co.uk")
    dns.add_dmarc("shop.co.uk", "v=DMARC1; p=none; sp=reject")
    [row] = domains_check(domains=["relay.shop.co.uk"])
    assert row.dmarc == "ok"
    assert findings(row, "dmarc")[0]["detail"] == (
        "v=DMARC1; p=none; sp=reject (the record of shop.co.uk): p=reject"
    )


def test_several_dmarc_records_are_wrong(dns, relay):
    dns.add_dmarc(RELAY, "v=DMARC1; p=reject").add_dmarc(RELAY, "v=DMARC1; p=none")
    [row] = domains_check(domains=[RELAY])
    assert row.dmarc == "wrong"
    assert "has 2 DMARC records" in findings(row, "dmarc")[0]["detail"]


def test_every_kind_of_domain_is_checked_and_settings_domains_get_keys_at_the_first_check(
    dns, settings
):
    settings.ALIAS_DOMAIN = "alias.iovox.test"
    settings.BOUNCE_DOMAIN = "bounce.iovox.test"
    proxy_domain_add(domain=RELAY)
    AliasDomain.objects.create(domain="leads.brand.example")  # made before keys were given
    dkim_key_add(domain="brand.example")
    assert not DkimKey.objects.filter(domain__endswith="iovox.test").exists()
    rows = {row.domain: row for row in domains_check()}
    assert {domain: row.kinds for domain, row in rows.items()} == {
        "alias.iovox.test": "alias",
        "bounce.iovox.test": "bounce",
        "brand.example": "signing",
        "leads.brand.example": "alias",
        RELAY: "proxy",
    }
    assert rows["brand.example"].mx == ""  # not an inbound domain
    keys = DkimKey.objects.filter(status=DkimKey.Status.PENDING)
    assert set(keys.values_list("domain", flat=True)) == set(rows)
    # A domain that is no longer ours loses its row at the next full check.
    ProxyDomain.objects.filter(domain=RELAY).delete()
    DkimKey.objects.filter(domain=RELAY).delete()
    assert RELAY not in {row.domain for row in domains_check()}
    assert not DomainCheck.objects.filter(domain=RELAY).exists()


def test_a_scheduled_run_that_is_out_of_time_leaves_the_rest_for_next_time(dns, relay):
    assert domains_check(time_limit=0) == []
    checked = domains_check(domains=[RELAY])
    everything = domains_check(time_limit=60)
    assert everything[-1].domain == RELAY  # checked last time, so last now
    assert checked[0].checked_at < everything[-1].checked_at


def test_the_worker_runs_the_check_hourly(dns, relay):
    job = next(job for job in SCHEDULES if job.name == "iovox:domain-checks")
    assert (job.func, job.minutes) == ("conversations.tasks.check_domains", 60)
    assert tasks.check_domains() == len(domains_to_check())
    from django_q.models import Schedule

    # The test database was made by `migrate`, which writes the schedules.
    assert Schedule.objects.get(name="iovox:domain-checks").func == job.func


def test_the_command_prints_each_record_and_what_to_publish(dns, relay):
    dns.add_mx(RELAY, [(10, INBOUND_HOST)])
    out = io.StringIO()
    with pytest.raises(SystemExit) as exit:
        call_command("check_domains", RELAY, stdout=out)
    assert exit.value.code == 1
    text = out.getvalue()
    assert "relay.example (proxy)" in text
    assert f"  MX    ok              relay.example\n        MX {INBOUND_HOST}\n" in text
    assert f"        publish: {DMARC}\n" in text
    assert f"        publish: {relay.dns_record}\n" in text
    assert "3 record(s) to publish." in text
    publish_everything(dns, relay)
    dns.records.pop(("relay.example.", "MX"))
    dns.add_mx(RELAY, [(10, INBOUND_HOST)])
    out = io.StringIO()
    call_command("check_domains", RELAY, stdout=out)
    assert out.getvalue().endswith("Every record is as it should be.\n")


def test_the_command_refuses_a_domain_that_is_not_ours(dns):
    with pytest.raises(CommandError, match="not one of our domains or signing domains: x.example"):
        call_command("check_domains", "x.example", stdout=io.StringIO())


def test_admin_shows_the_records_and_checks_again(admin_client, dns, relay):
    domains_check(domains=[RELAY])
    row = DomainCheck.objects.get(domain=RELAY)
    page = unescape(
        admin_client.get(f"/admin/conversations/domaincheck/{row.pk}/change/").content.decode()
    )
    assert relay.dns_record in page and DMARC in page
    listing = admin_client.get("/admin/conversations/domaincheck/?dkim=missing").content.decode()
    assert RELAY in listing
    publish_everything(dns, relay)
    response = admin_client.post(
        "/admin/conversations/domaincheck/",
        {"action": "check_again", "_selected_action": [row.pk]},
        follow=True,
    )
    assert f"Checked {RELAY}: MX ok, SPF ok, DKIM ok, DMARC ok" in response.content.decode()
    row.refresh_from_db()
    assert row.dkim == "ok"


def test_admin_adds_proxy_and_alias_domains_with_their_keys(admin_client, dns):
    account = AccountFactory()
    response = admin_client.post(
        "/admin/conversations/proxydomain/add/",
        {"domain": " Relay.Example. ", "account": account.pk},
        follow=True,
    )
    assert response.status_code == 200
    assert ProxyDomain.objects.get(domain=RELAY).account == account
    assert DkimKey.objects.get(domain=RELAY).status == DkimKey.Status.PENDING
    admin_client.post(
        "/admin/tracking/aliasdomain/add/", {"domain": "leads.brand.example"}, follow=True
    )
    assert DkimKey.objects.filter(domain="leads.brand.example").count() == 1
    response = admin_client.post("/admin/conversations/proxydomain/add/", {"domain": "bad domain"})
    assert "is not a domain name" in unescape(response.content.decode())
    assert not ProxyDomain.objects.filter(domain="bad domain").exists()
    proxy = ProxyDomain.objects.get(domain=RELAY)
    response = admin_client.post(
        "/admin/conversations/proxydomain/",
        {"action": "check_dns", "_selected_action": [proxy.pk]},
        follow=True,
    )
    assert f"Checked {RELAY}: MX missing" in response.content.decode()


def test_adding_a_proxy_domain_again_keeps_its_key(dns):
    proxy_domain_add(domain=RELAY)
    key = DkimKey.objects.get(domain=RELAY)
    proxy_domain_add(domain=RELAY, account=AccountFactory())
    assert list(DkimKey.objects.filter(domain=RELAY)) == [key]


def test_what_dns_says_is_shown_without_control_characters_and_cut_short(dns, relay):
    """Anyone's TXT record may hold terminal escapes or kilobytes: the command prints them."""
    dns.add(RELAY, "TXT", '"v=spf1 \\027[2J ip4:192.0.2.1 -all"')
    dns.add(f"_dmarc.{RELAY}", "TXT", " ".join(['"v=DMARC1; p=bogus' + "x" * 200 + '"'] * 10))
    dns.add(relay.dns_name, "TXT", '"v=DKIM1; p; ;="')  # not a tag list
    [row] = domains_check(domains=[RELAY])
    assert (row.spf, row.dkim, row.dmarc) == ("wrong", "wrong", "wrong")
    spf_detail = findings(row, "spf")[0]["detail"]
    assert spf_detail.startswith("v=spf1 ?[2J ip4:192.0.2.1 -all: permerror for 127.0.0.1")
    dmarc_detail = findings(row, "dmarc")[0]["detail"]
    assert len(dmarc_detail) == 1000 and dmarc_detail.endswith("…")
    out = io.StringIO()
    with pytest.raises(SystemExit):
        call_command("check_domains", RELAY, stdout=out)
    assert "\x1b" not in out.getvalue()
